/**
 * The emoji sets: Iconify JSON packages on npm (devDependencies: data, not code). Each holds SVG bodies (drawn on a
 * viewBox of the set's width x height), the set's licence and author (info.json), and its version (package.json).
 * Names are shared across sets (`red-apple` in all four), which is what lets one emoji be matched across styles.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../errors';

export interface EmojiSetSpec {
  /** The Iconify prefix: the package is @iconify-json/<prefix>. */
  readonly prefix: string;
  /** The word in captions: "red apple, <style> style". */
  readonly style: string;
}

/** Every set the command knows, in the default order. The fluent set's style is its family name, "fluent". */
export const EMOJI_SETS: readonly EmojiSetSpec[] = [
  { prefix: 'noto', style: 'noto' },
  { prefix: 'twemoji', style: 'twemoji' },
  { prefix: 'openmoji', style: 'openmoji' },
  { prefix: 'fluent-emoji-flat', style: 'fluent' },
];

export interface EmojiIcon {
  readonly body: string;
  /** The icon's viewBox: left, top, width, height (the set's unless the icon overrides them). */
  readonly left: number;
  readonly top: number;
  readonly width: number;
  readonly height: number;
}

export interface EmojiSet {
  readonly spec: EmojiSetSpec;
  readonly packageName: string;
  readonly version: string;
  /** The set's own name, e.g. "Noto Emoji". */
  readonly title: string;
  readonly author: { readonly name: string; readonly url?: string };
  readonly license: { readonly title: string; readonly spdx?: string; readonly url?: string };
  /** Visible icons by name; hidden ones (kept by Iconify for old names) and aliases are left out. */
  readonly icons: ReadonlyMap<string, EmojiIcon>;
}

export function emojiPackageName(spec: EmojiSetSpec): string {
  return `@iconify-json/${spec.prefix}`;
}

/** The sets named by their styles (or prefixes), in the order given, once each; an unknown name is a DataError. */
export function emojiSetSpecs(names: readonly string[]): EmojiSetSpec[] {
  if (names.length === 0) throw new DataError('no emoji styles given', `choose from ${styleList()}`);
  const specs = names.map((name) => {
    const spec = EMOJI_SETS.find((set) => set.style === name || set.prefix === name);
    if (spec === undefined) {
      throw new DataError(`unknown emoji style "${name}"`, `choose from ${styleList()}`);
    }
    return spec;
  });
  return [...new Set(specs)];
}

function styleList(): string {
  return EMOJI_SETS.map((set) => set.style).join(', ');
}

/**
 * Reads a set from its installed package. `searchFrom` is where module resolution starts (tests point it at an empty
 * folder to see the message for a missing package).
 */
export function loadEmojiSet(spec: EmojiSetSpec, searchFrom: string = __dirname): EmojiSet {
  const packageName = emojiPackageName(spec);
  let root: string;
  try {
    root = path.dirname(require.resolve(`${packageName}/package.json`, { paths: [searchFrom] }));
  } catch {
    throw new DataError(
      `the "${spec.style}" emoji style needs the npm package ${packageName}, which is not installed`,
      `install it with: npm install --save-dev ${packageName}  (a devDependency of dalle: \`npm ci\` installs it, ` +
        `\`npm ci --omit=dev\` does not); or leave the style out with --styles`,
    );
  }
  const read = <T>(file: string): T => JSON.parse(fs.readFileSync(path.join(root, file), 'utf8')) as T;
  const packageJson = read<{ version: string }>('package.json');
  const info = read<{ name: string; author: EmojiSet['author']; license: EmojiSet['license'] }>('info.json');
  const data = read<IconifyJson>('icons.json');
  const icons = new Map<string, EmojiIcon>();
  for (const [name, icon] of Object.entries(data.icons)) {
    if (icon.hidden === true) continue;
    icons.set(name, {
      body: icon.body,
      left: icon.left ?? data.left ?? 0,
      top: icon.top ?? data.top ?? 0,
      width: icon.width ?? data.width ?? 16,
      height: icon.height ?? data.height ?? 16,
    });
  }
  return {
    spec,
    packageName,
    version: packageJson.version,
    title: info.name,
    author: info.author,
    license: info.license,
    icons,
  };
}

/** The parts of the IconifyJSON format (iconify.design/docs/types/iconify-json.html) that rendering needs. */
interface IconifyJson {
  readonly left?: number;
  readonly top?: number;
  readonly width?: number;
  readonly height?: number;
  readonly icons: Record<string, IconifyIcon>;
}

interface IconifyIcon {
  readonly body: string;
  readonly left?: number;
  readonly top?: number;
  readonly width?: number;
  readonly height?: number;
  readonly hidden?: boolean;
}
