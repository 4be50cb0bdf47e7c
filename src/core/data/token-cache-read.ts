/**
 * Reading a token cache back (token-cache.ts writes it). Every file is checked when the cache is opened: meta.json
 * (JSON, its key, the image count of each split), each split's .npy (a valid header, int32, (N, h, w) on the dVAE's
 * grid, every token inside the dVAE's vocabulary) and its captions (one JSON array of strings per grid). A damaged
 * cache (a disk error, a copy cut short, an edited file) is then a DataError (exit code 4) that names the file and says
 * to delete the cache, which the next run rebuilds, instead of a raw error deep inside the prior.
 * Key: N = images, h = w = the dVAE's grid side, V = its vocabulary size.
 */
import * as path from 'node:path';
import { readNpySync } from '../io/npy';
import { readTextFileSync, TEXT_LIMITS } from '../io/text-file';
import { DataError } from './errors';
import type { TokenSplit, TokenSplitName } from './token-cache';

export const TOKEN_CACHE_META_FILE = 'meta.json';

/** What the cache must fit: the dVAE that reads its grids back. */
export interface TokenCacheShape {
  readonly gridSide: number;
  readonly vocabSize: number;
}

/** The cache `dir` is damaged in `file`: delete it and it is rebuilt. */
export function damagedCache(dir: string, file: string, detail: string): DataError {
  return new DataError(
    `the token cache ${dir} is damaged: ${path.join(dir, file)}: ${detail}`,
    `delete ${dir} (rm -r ${JSON.stringify(dir)}): the next run encodes the images again and rebuilds it`,
  );
}

/** Reads and checks the splits `names` of the cache in `dir` (made under `key`). */
export function readTokenCacheSplits(
  dir: string, key: string, names: readonly TokenSplitName[], shape: TokenCacheShape,
): Map<TokenSplitName, TokenSplit> {
  const images = readMetaImageCounts(dir, key);
  const splits = new Map<TokenSplitName, TokenSplit>();
  for (const name of names) {
    const split = readSplit(dir, name, shape);
    if (images[name] !== split.shape[0]) {
      throw damagedCache(dir, TOKEN_CACHE_META_FILE, `it records ${String(images[name])} images for ${name}, but ${name}.npy holds ${split.shape[0]} grids`);
    }
    splits.set(name, split);
  }
  return splits;
}

/** meta.json: `{ key, splits: { train: { images }, ... } }`; returns the image count of each split. */
function readMetaImageCounts(dir: string, key: string): Partial<Record<string, number>> {
  let meta: unknown;
  try {
    meta = JSON.parse(readTextFileSync(path.join(dir, TOKEN_CACHE_META_FILE), TEXT_LIMITS.runMetadata));
  } catch (error) {
    throw damagedCache(dir, TOKEN_CACHE_META_FILE, messageOf(error));
  }
  const record = meta as { key?: unknown; splits?: Record<string, { images?: unknown } | undefined> } | null;
  if (typeof record !== 'object' || record === null || record.key !== key) {
    throw damagedCache(dir, TOKEN_CACHE_META_FILE, `its key is ${JSON.stringify((record as { key?: unknown } | null)?.key)}, not the folder's ${key}`);
  }
  const counts: Partial<Record<string, number>> = {};
  for (const [name, split] of Object.entries(record.splits ?? {})) {
    if (typeof split?.images === 'number') counts[name] = split.images;
  }
  return counts;
}

function readSplit(dir: string, name: TokenSplitName, { gridSide, vocabSize }: TokenCacheShape): TokenSplit {
  const npyFile = `${name}.npy`;
  let npy: ReturnType<typeof readNpySync>;
  try {
    npy = readNpySync(path.join(dir, npyFile));
  } catch (error) {
    throw damagedCache(dir, npyFile, messageOf(error));
  }
  const shape = npy.shape;
  if (npy.dtype !== 'i32' || shape.length !== 3 || shape[0] < 1 || shape[1] !== gridSide || shape[2] !== gridSide) {
    throw damagedCache(dir, npyFile, `it holds ${npy.dtype} (${shape.join(', ')}), not int32 (N, ${gridSide}, ${gridSide}) grids of the dVAE`);
  }
  const tokens = npy.data as Int32Array;
  const bad = tokens.findIndex((token) => !(token >= 0 && token < vocabSize));
  if (bad >= 0) {
    const cells = gridSide * gridSide;
    const [grid, row, column] = [Math.floor(bad / cells), Math.floor((bad % cells) / gridSide), bad % gridSide];
    throw damagedCache(dir, npyFile, `grid ${grid}, row ${row}, column ${column} holds token ${tokens[bad]}, outside the dVAE's vocabulary 0..${vocabSize - 1}`);
  }
  const captions = readCaptions(dir, `${name}.captions.jsonl`);
  if (captions.length !== shape[0]) {
    throw damagedCache(dir, `${name}.captions.jsonl`, `it has ${captions.length} caption lines for the ${shape[0]} grids of ${npyFile}`);
  }
  return { tokens, shape: [shape[0], shape[1], shape[2]], captions };
}

/** One JSON array of (one or more) strings per line. */
function readCaptions(dir: string, file: string): string[][] {
  let text: string;
  try {
    text = readTextFileSync(path.join(dir, file), TEXT_LIMITS.manifest);
  } catch (error) {
    throw damagedCache(dir, file, messageOf(error));
  }
  return text.split('\n').filter((line) => line !== '').map((line, i) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw damagedCache(dir, file, `line ${i + 1}: ${messageOf(error)}`);
    }
    if (!Array.isArray(value) || value.length === 0 || !value.every((caption) => typeof caption === 'string')) {
      throw damagedCache(dir, file, `line ${i + 1} is not a JSON array of captions (strings)`);
    }
    return value as string[];
  });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
