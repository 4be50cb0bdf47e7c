/**
 * Which (emoji, style) pairs go to train, val and zeroshot: a pure function of (seed, the styles' icon names, size),
 * so the same flags give the same split on every machine.
 *
 * Every emoji name gets a rank key, sha256("<seed>:<name>"); emoji are taken in key order.
 * - size: with a cap of N pairs, whole emoji (all their styles) are taken in key order while they fit, so an emoji is
 *   never cut between splits by the cap.
 * - val: the first ceil(5%) of the taken emoji, every style: emoji never seen in training (held-out emoji).
 * - zeroshot: the next ceil(5%) of the taken emoji that have two or more styles: one style, picked by
 *   sha256("<seed>:<name>:style"), is held out; the emoji's other styles stay in train. A model that draws
 *   "red apple, noto style" having seen only the twemoji and openmoji apples composes a style with a new subject.
 * - train: everything else. With fewer than 3 emoji taken, all go to train.
 */
import { createHash } from 'node:crypto';

export type SplitName = 'train' | 'val' | 'zeroshot';
export const SPLIT_NAMES: readonly SplitName[] = ['train', 'val', 'zeroshot'];

export interface EmojiPair {
  readonly name: string;
  readonly style: string;
  readonly split: SplitName;
}

export interface SplitOptions {
  readonly seed: number;
  /** Cap on pairs; 0 = every pair. */
  readonly size: number;
  readonly valFraction?: number;
  readonly zeroshotFraction?: number;
}

/** 5% of emoji held out for validation, 5% of the multi-style emoji for zero-shot pairs. */
export const VAL_FRACTION = 0.05;
export const ZEROSHOT_FRACTION = 0.05;
const MIN_EMOJI_FOR_HELD_OUT = 3;

export const SPLIT_RULE =
  'emoji ranked by sha256("<seed>:<name>"); --size takes whole emoji in rank order while they fit; val = the first ' +
  'ceil(5%) of the emoji taken (all styles); zeroshot = the next ceil(5%) of the taken emoji with 2+ styles, one ' +
  'style each (picked by sha256("<seed>:<name>:style")), their other styles in train; train = the rest';

/**
 * `stylesByName`: for each emoji name, the styles that have it (in a fixed style order). Returns every chosen pair,
 * sorted by split, then name, then style order.
 */
export function splitEmojiPairs(
  stylesByName: ReadonlyMap<string, readonly string[]>,
  options: SplitOptions,
): EmojiPair[] {
  const valFraction = options.valFraction ?? VAL_FRACTION;
  const zeroshotFraction = options.zeroshotFraction ?? ZEROSHOT_FRACTION;
  const ranked = [...stylesByName.keys()]
    .map((name) => ({ name, key: sha256Hex(`${options.seed}:${name}`) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.name < b.name ? -1 : 1))
    .map(({ name }) => name);
  const taken = takeWithinSize(ranked, stylesByName, options.size);

  const split = new Map<string, SplitName | { heldOut: string }>();
  if (taken.length >= MIN_EMOJI_FOR_HELD_OUT) {
    const valCount = Math.ceil(valFraction * taken.length);
    taken.slice(0, valCount).forEach((name) => split.set(name, 'val'));
    const multiStyle = taken.slice(valCount).filter((name) => (stylesByName.get(name) ?? []).length >= 2);
    const zeroshotCount = Math.ceil(zeroshotFraction * multiStyle.length);
    for (const name of multiStyle.slice(0, zeroshotCount)) {
      const styles = stylesByName.get(name) ?? [];
      const pick = parseInt(sha256Hex(`${options.seed}:${name}:style`).slice(0, 8), 16) % styles.length;
      split.set(name, { heldOut: styles[pick] });
    }
  }

  const pairs: EmojiPair[] = [];
  for (const name of taken) {
    const assigned = split.get(name) ?? 'train';
    for (const style of stylesByName.get(name) ?? []) {
      const pairSplit = typeof assigned === 'string' ? assigned : style === assigned.heldOut ? 'zeroshot' : 'train';
      pairs.push({ name, style, split: pairSplit });
    }
  }
  const styleRank = (pair: EmojiPair): number => (stylesByName.get(pair.name) ?? []).indexOf(pair.style);
  return pairs.sort(
    (a, b) =>
      SPLIT_NAMES.indexOf(a.split) - SPLIT_NAMES.indexOf(b.split) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) ||
      styleRank(a) - styleRank(b),
  );
}

/** Whole emoji in rank order while their pairs fit in `size` (0 = no cap). */
function takeWithinSize(
  ranked: readonly string[],
  stylesByName: ReadonlyMap<string, readonly string[]>,
  size: number,
): string[] {
  if (size === 0) return [...ranked];
  const taken: string[] = [];
  let pairs = 0;
  for (const name of ranked) {
    const count = (stylesByName.get(name) ?? []).length;
    if (pairs + count > size) continue;
    taken.push(name);
    pairs += count;
    if (pairs === size) break;
  }
  return taken;
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
