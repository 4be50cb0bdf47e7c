/**
 * `dalle dataset emoji`: renders the emoji sets into an image + caption data set, split into train / val / zeroshot.
 *
 * Output (built in a temporary sibling folder and renamed into place, so DIR is complete or absent):
 *   DIR/{train,val,zeroshot}/NNNNNN.png   RGB on white, resolution x resolution
 *   DIR/{train,val,zeroshot}/NNNNNN.txt   its caption, "red apple, noto style"
 *   DIR/{train,val,zeroshot}/manifest.jsonl   {"image", "caption", "emoji", "style"} per line
 *   DIR/dataset.json   sets, versions, licences, counts, the split rule, what was skipped
 *   DIR/LICENSES.md    each set's licence and author
 * The same flags give the same files: no timestamps, a fixed order, a split that depends only on the seed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EventSink, silentSink } from '../../events';
import { writeDirectoryAtomic } from '../../io/atomic';
import { mapWithConcurrency } from '../concurrency';
import { DataError } from '../errors';
import { SkipReport, SkipSummary } from '../skips';
import { licensesMarkdown } from './licenses';
import { emojiCaption, renderIconPng } from './render';
import { EMOJI_SETS, EmojiSet, emojiSetSpecs, loadEmojiSet } from './sets';
import {
  EmojiPair,
  SPLIT_NAMES,
  SPLIT_RULE,
  splitEmojiPairs,
  SplitName,
  VAL_FRACTION,
  ZEROSHOT_FRACTION,
} from './split';

export interface EmojiDatasetOptions {
  readonly out: string;
  /** Cap on image + caption pairs; 0 = all (about 15k with the four sets). */
  readonly size: number;
  readonly resolution: number;
  /** Styles (or Iconify prefixes) to render, in caption order; default all. */
  readonly styles?: readonly string[];
  readonly seed: number;
  /** Replace an existing DIR. */
  readonly force?: boolean;
  /** Renders at once (sharp, on libuv's thread pool). */
  readonly concurrency?: number;
  readonly events?: EventSink;
  /** Where to look for the @iconify-json packages (tests: a folder without them). */
  readonly searchFrom?: string;
}

export interface EmojiDatasetResult {
  readonly out: string;
  readonly resolution: number;
  readonly seed: number;
  readonly styles: readonly string[];
  readonly pairs: Readonly<Record<SplitName, number>>;
  readonly skipped: SkipSummary;
  readonly seconds: number;
}

/** One rendered image as it appears in a manifest line. */
interface ManifestLine {
  readonly image: string;
  readonly caption: string;
  readonly emoji: string;
  readonly style: string;
}

const DEFAULT_RENDER_CONCURRENCY = 2;
const PROGRESS_INTERVAL_MS = 250;

export async function buildEmojiDataset(options: EmojiDatasetOptions): Promise<EmojiDatasetResult> {
  const events = options.events ?? silentSink;
  const started = Date.now();
  const out = path.resolve(options.out);
  if (fs.existsSync(out) && options.force !== true) {
    throw new DataError(`${out} already exists`, 'choose another --out, or pass --force to replace it');
  }
  const specs = emojiSetSpecs(options.styles ?? EMOJI_SETS.map((set) => set.style));

  events.emit({ type: 'stage', name: 'loading emoji sets', detail: specs.map((spec) => spec.style).join(', ') });
  const sets = specs.map((spec) => loadEmojiSet(spec, options.searchFrom));
  const setByStyle = new Map(sets.map((set) => [set.spec.style, set]));
  const stylesByName = new Map<string, string[]>();
  for (const set of sets) {
    for (const name of set.icons.keys()) {
      const styles = stylesByName.get(name) ?? [];
      styles.push(set.spec.style);
      stylesByName.set(name, styles);
    }
  }
  const pairs = splitEmojiPairs(stylesByName, { seed: options.seed, size: options.size });

  const detail = `${pairs.length} images at ${options.resolution} px to ${out}`;
  events.emit({ type: 'stage', name: 'rendering', detail });
  const skipped = new SkipReport();
  const lines = new Map<SplitName, (ManifestLine | undefined)[]>(SPLIT_NAMES.map((split) => [split, []]));
  await writeDirectoryAtomic(
    out,
    async (folder) => {
      for (const split of SPLIT_NAMES) fs.mkdirSync(path.join(folder, split));
      const numbered = numberWithinSplits(pairs);
      const renderStarted = Date.now();
      let done = 0;
      let lastProgress = 0;
      const concurrency = options.concurrency ?? DEFAULT_RENDER_CONCURRENCY;
      await mapWithConcurrency(numbered, concurrency, async ({ pair, number }) => {
        const line = await renderPair(pair, number, folder, setByStyle, options.resolution, skipped);
        (lines.get(pair.split) as (ManifestLine | undefined)[])[number] = line;
        done++;
        const now = Date.now();
        if (now - lastProgress >= PROGRESS_INTERVAL_MS || done === numbered.length) {
          lastProgress = now;
          const seconds = Math.max((now - renderStarted) / 1000, 1e-3);
          events.emit({
            type: 'progress',
            task: 'render',
            step: done,
            total: numbered.length,
            unit: 'image',
            metrics: { skipped: skipped.total, images_per_s: Number((done / seconds).toFixed(1)) },
          });
        }
      });
      events.emit({ type: 'done', task: 'render' });
      for (const split of SPLIT_NAMES) {
        const rendered = (lines.get(split) ?? []).filter((line): line is ManifestLine => line !== undefined);
        const manifest = rendered.map((line) => JSON.stringify(line) + '\n').join('');
        fs.writeFileSync(path.join(folder, split, 'manifest.jsonl'), manifest);
      }
      const counts = countPairs(lines);
      fs.writeFileSync(path.join(folder, 'LICENSES.md'), licensesMarkdown(sets, counts.byStyle));
      const description = describeDataset(options, sets, counts, skipped);
      fs.writeFileSync(path.join(folder, 'dataset.json'), JSON.stringify(description, null, 2) + '\n');
    },
    { replace: options.force === true },
  );
  events.emit({ type: 'artifact', kind: 'dataset', path: out });
  const counts = countPairs(lines);
  return {
    out,
    resolution: options.resolution,
    seed: options.seed,
    styles: specs.map((spec) => spec.style),
    pairs: counts.bySplit,
    skipped: skipped.toJSON(),
    seconds: (Date.now() - started) / 1000,
  };
}

/** Each pair's file number within its split: NNNNNN in split order (pairs arrive sorted by split, name, style). */
function numberWithinSplits(pairs: readonly EmojiPair[]): { pair: EmojiPair; number: number }[] {
  const next = new Map<SplitName, number>();
  return pairs.map((pair) => {
    const number = next.get(pair.split) ?? 0;
    next.set(pair.split, number + 1);
    return { pair, number };
  });
}

async function renderPair(
  pair: EmojiPair,
  number: number,
  folder: string,
  setByStyle: ReadonlyMap<string, EmojiSet>,
  resolution: number,
  skipped: SkipReport,
): Promise<ManifestLine | undefined> {
  const set = setByStyle.get(pair.style) as EmojiSet;
  const icon = set.icons.get(pair.name);
  const id = `${set.spec.prefix}:${pair.name}`;
  if (icon === undefined) return undefined; // cannot happen: pairs come from the sets' own names
  let png: Buffer;
  try {
    png = await renderIconPng(icon, resolution);
  } catch (error) {
    skipped.add('corrupt', id, `librsvg could not draw it: ${(error as Error).message.split('\n', 1)[0]}`);
    return undefined;
  }
  const base = String(number).padStart(6, '0');
  const caption = emojiCaption(pair.name, pair.style);
  await fs.promises.writeFile(path.join(folder, pair.split, `${base}.png`), png);
  await fs.promises.writeFile(path.join(folder, pair.split, `${base}.txt`), caption + '\n');
  return { image: `${base}.png`, caption, emoji: pair.name, style: pair.style };
}

interface PairCounts {
  readonly bySplit: Record<SplitName, number>;
  readonly emojiBySplit: Record<SplitName, number>;
  readonly byStyle: Map<string, number>;
}

function countPairs(lines: ReadonlyMap<SplitName, readonly (ManifestLine | undefined)[]>): PairCounts {
  const bySplit = { train: 0, val: 0, zeroshot: 0 };
  const emojiBySplit = { train: 0, val: 0, zeroshot: 0 };
  const byStyle = new Map<string, number>();
  for (const split of SPLIT_NAMES) {
    const rendered = (lines.get(split) ?? []).filter((line): line is ManifestLine => line !== undefined);
    bySplit[split] = rendered.length;
    emojiBySplit[split] = new Set(rendered.map((line) => line.emoji)).size;
    for (const line of rendered) byStyle.set(line.style, (byStyle.get(line.style) ?? 0) + 1);
  }
  return { bySplit, emojiBySplit, byStyle };
}

/** dataset.json: everything needed to know what the data set is and to make it again. */
function describeDataset(
  options: EmojiDatasetOptions,
  sets: readonly EmojiSet[],
  counts: PairCounts,
  skipped: SkipReport,
): unknown {
  return {
    format: 'dalle-emoji-dataset',
    version: 1,
    made_by: `dalle dataset emoji --size ${options.size} --resolution ${options.resolution} ` +
      `--styles ${sets.map((set) => set.spec.style).join(',')} --seed ${options.seed}`,
    seed: options.seed,
    resolution: options.resolution,
    size_cap: options.size,
    caption_format: '<emoji name, dashes as spaces>, <style> style',
    sets: sets.map((set) => ({
      style: set.spec.style,
      package: set.packageName,
      version: set.version,
      name: set.title,
      author: set.author,
      license: set.license,
      icons_available: set.icons.size,
      images: counts.byStyle.get(set.spec.style) ?? 0,
    })),
    splits: Object.fromEntries(
      SPLIT_NAMES.map((split) => [split, { images: counts.bySplit[split], emoji: counts.emojiBySplit[split] }]),
    ),
    split_rule: { text: SPLIT_RULE, val_fraction: VAL_FRACTION, zeroshot_fraction: ZEROSHOT_FRACTION },
    skipped: skipped.toJSON(),
  };
}
