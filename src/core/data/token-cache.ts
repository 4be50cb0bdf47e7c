/**
 * The prior's training data: every image of a data set encoded once by a trained dVAE (argmax codes, no noise), with
 * its captions, cached so later runs with the same dVAE checkpoint and the same data skip the encoding.
 *
 *   DVAE_RUN/token-cache/KEY/train.npy             int32 (N, h, w): NumPy reads it directly
 *   DVAE_RUN/token-cache/KEY/train.captions.jsonl  one JSON array of captions per line, in the order of the grids
 *   DVAE_RUN/token-cache/KEY/val.npy, val.captions.jsonl   when the data set has a val split
 *   DVAE_RUN/token-cache/KEY/meta.json             what the key was made of, counts, what was skipped
 *
 * KEY is the first 16 hex digits of a SHA-256 over the dVAE checkpoint's model.safetensors bytes, the dVAE's
 * resolution, and per split the data set's resolved path and every record's id, captions, and (for files) byte size
 * and modification time: a new checkpoint, an edited caption or a replaced image gives a new key. The directory is
 * written atomically, so an interrupted encoding leaves no half cache.
 *
 * Splits: `--data DIR` with DIR/train (and optionally DIR/val) sub-folders, as `dalle dataset emoji` writes, uses
 * them; any other data source (a folder of images, a manifest, tar shards) is the train split, with no val split.
 * Key: N = images, h = w = grid side of the dVAE.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeDirectoryAtomicSync } from '../io/atomic';
import { sha256File } from '../io/checksums';
import { writeNpySync } from '../io/npy';
import { EventSink, silentSink } from '../events';
import type { TrainedDvae } from '../models/dvae/load';
import { Tensor, noGrad, tidy } from '../tensor';
import { mapWithConcurrency } from './concurrency';
import { DataError, SkipError } from './errors';
import { decodeImage, rgbToChw } from './image';
import { SkipReport, SkipSummary } from './skips';
import { readTokenCacheSplits } from './token-cache-read';
import { openDataSource } from './sources/open';
import { DataRecord, DataSource } from './sources/types';

export const TOKEN_CACHE_DIR = 'token-cache';
const META_FILE = 'meta.json';
/** Images encoded per dVAE forward. */
const ENCODE_BATCH = 32;
/** Images decoded in parallel (sharp's worker threads). */
const DECODES_IN_FLIGHT = 8;

export type TokenSplitName = 'train' | 'val';

/** One split: grids and their captions (every caption of each image). */
export interface TokenSplit {
  /** int32 (N, h, w), row-major. */
  readonly tokens: Int32Array;
  readonly shape: [number, number, number];
  readonly captions: readonly (readonly string[])[];
}

export interface TokenCache {
  readonly key: string;
  readonly dir: string;
  /** True when this call encoded the images (false: read from the cache). */
  readonly built: boolean;
  readonly train: TokenSplit;
  readonly val?: TokenSplit;
}

export interface TokenCacheOptions {
  /** A data set: a folder with train/ (and val/) sub-folders, or any one data source (the train split). */
  readonly data: string;
  readonly dvae: TrainedDvae;
  readonly events?: EventSink;
  /**
   * Called with the cache key before the cache is read or the images encoded; throwing refuses it (a resumed prior
   * checks that its data and dVAE still give the key it was trained on, before minutes of encoding).
   */
  readonly checkKey?: (key: string) => void;
}

/** The data sources of each split of `data`. */
export function tokenCacheSplits(data: string): Array<{ name: TokenSplitName; path: string }> {
  const train = path.join(data, 'train');
  if (fs.statSync(train, { throwIfNoEntry: false })?.isDirectory()) {
    const out: Array<{ name: TokenSplitName; path: string }> = [{ name: 'train', path: train }];
    const val = path.join(data, 'val');
    if (fs.statSync(val, { throwIfNoEntry: false })?.isDirectory()) out.push({ name: 'val', path: val });
    return out;
  }
  return [{ name: 'train', path: data }];
}

function sourceFingerprint(hash: ReturnType<typeof createHash>, name: string, source: DataSource): void {
  hash.update(`split ${name} ${path.resolve(source.path)} ${source.records.length}\n`);
  for (const r of source.records) {
    let stamp = '';
    if (r.file !== undefined) {
      const st = fs.statSync(r.file, { throwIfNoEntry: false });
      stamp = st ? `${st.size}:${st.mtimeMs}` : 'missing';
    }
    hash.update(`${r.id}\u0000${JSON.stringify(r.captions)}\u0000${stamp}\n`);
  }
}

/** The cache key and directory of (data, dVAE checkpoint), and the opened sources of its splits. */
async function tokenCacheLocation(options: TokenCacheOptions): Promise<{ key: string; dir: string; sources: Array<{ name: TokenSplitName; source: DataSource }> }> {
  const { dvae } = options;
  const splits = tokenCacheSplits(options.data);
  const sources: Array<{ name: TokenSplitName; source: DataSource }> = [];
  for (const s of splits) sources.push({ name: s.name, source: await openDataSource(s.path, { requireCaptions: true }) });
  const hash = createHash('sha256');
  hash.update(`dalle-token-cache 1\nresolution ${dvae.resolution}\ndvae ${sha256File(path.join(dvae.checkpoint, 'model.safetensors'))}\n`);
  for (const { name, source } of sources) sourceFingerprint(hash, name, source);
  const key = hash.digest('hex').slice(0, 16);
  const runDir = path.dirname(path.dirname(dvae.checkpoint)); // RUN/checkpoints/step-N -> RUN
  return { key, dir: path.join(runDir, TOKEN_CACHE_DIR, key), sources };
}

/** Reads the cache for (data, dVAE checkpoint) when it exists; never encodes or writes (undefined when absent). */
export async function findTokenCache(options: TokenCacheOptions): Promise<TokenCache | undefined> {
  return readCacheAt(await tokenCacheLocation(options), options);
}

function readCacheAt(
  { key, dir, sources }: { key: string; dir: string; sources: Array<{ name: TokenSplitName }> }, options: TokenCacheOptions,
): TokenCache | undefined {
  if (!fs.existsSync(path.join(dir, META_FILE))) return undefined;
  (options.events ?? silentSink).emit({ type: 'log', level: 'info', message: `token cache ${dir}` });
  const { gridSide, config } = options.dvae;
  const splits = readTokenCacheSplits(dir, key, sources.map(({ name }) => name), { gridSide, vocabSize: config.model.vocab_size });
  return { key, dir, built: false, train: splits.get('train') as TokenSplit, val: splits.get('val') };
}

/**
 * Encodes one data source (any form openDataSource reads) into argmax grids in memory, without a cache; `limit` > 0
 * encodes only its first `limit` records.
 */
export async function encodeTokenSplit(
  dvae: TrainedDvae, dataPath: string, events: EventSink = silentSink, limit = 0,
): Promise<{ split: TokenSplit; skipped: SkipSummary }> {
  const opened = await openDataSource(dataPath, { requireCaptions: true });
  const source = limit > 0 ? { ...opened, records: opened.records.slice(0, limit) } : opened;
  return encodeSource(dvae, source, path.basename(dataPath) || dataPath, events);
}

/** Reads the cache for (data, dVAE checkpoint), or encodes every image and writes it. */
export async function loadOrBuildTokenCache(options: TokenCacheOptions): Promise<TokenCache> {
  const events = options.events ?? silentSink;
  const { dvae } = options;
  const location = await tokenCacheLocation(options);
  options.checkKey?.(location.key);
  const found = readCacheAt(location, options);
  if (found) return found;
  const { key, dir, sources } = location;

  events.emit({ type: 'stage', name: 'encoding images', detail: `with ${dvae.checkpoint} into ${dir}` });
  const encoded: Array<{ name: TokenSplitName; split: TokenSplit; skipped: SkipSummary }> = [];
  for (const { name, source } of sources) {
    const r = await encodeSource(dvae, source, name, events);
    encoded.push({ name, ...r });
  }
  writeDirectoryAtomicSync(
    dir,
    (tmp) => {
      for (const { name, split } of encoded) {
        writeNpySync(path.join(tmp, `${name}.npy`), { dtype: 'i32', shape: split.shape, data: split.tokens });
        fs.writeFileSync(path.join(tmp, `${name}.captions.jsonl`), split.captions.map((c) => JSON.stringify(c) + '\n').join(''));
      }
      const meta = {
        key,
        dvae_checkpoint: dvae.checkpoint,
        data: path.resolve(options.data),
        splits: Object.fromEntries(encoded.map(({ name, split, skipped }) => [name, { images: split.shape[0], skipped }])),
      };
      fs.writeFileSync(path.join(tmp, META_FILE), JSON.stringify(meta, null, 2) + '\n');
    },
    { replace: true },
  );
  events.emit({ type: 'artifact', kind: 'tokens', path: dir });
  const train = encoded.find((e) => e.name === 'train')!.split;
  const val = encoded.find((e) => e.name === 'val')?.split;
  return { key, dir, built: true, train, val };
}

/** Encodes every record of a source (skipping undecodable images, reported) into argmax grids. */
async function encodeSource(
  dvae: TrainedDvae, source: DataSource, name: string, events: EventSink,
): Promise<{ split: TokenSplit; skipped: SkipSummary }> {
  const { resolution, gridSide, model } = dvae;
  const skipped = new SkipReport();
  skipped.merge(source.skipped);
  const records = source.records;
  const imageSize = 3 * resolution * resolution;
  const grid = gridSide * gridSide;
  const chunks: Int32Array[] = [];
  const captions: (readonly string[])[] = [];
  const task = `encode ${name}`;
  for (let start = 0; start < records.length; start += ENCODE_BATCH) {
    const batch = records.slice(start, start + ENCODE_BATCH);
    const decoded = await mapWithConcurrency(batch, DECODES_IN_FLIGHT, async (r: DataRecord) => {
      try {
        return await decodeImage(r.file ?? (await r.load()), { resolution, maxInputPixels: dvae.config.data.max_input_pixels });
      } catch (error) {
        if (error instanceof SkipError) return error;
        throw error;
      }
    });
    const kept: Uint8Array[] = [];
    decoded.forEach((d, i) => {
      if (d instanceof SkipError) skipped.add(d.reason, batch[i].id, d.detail);
      else {
        kept.push(d);
        captions.push(batch[i].captions);
      }
    });
    if (kept.length > 0) {
      const pixels = new Float32Array(kept.length * imageSize);
      kept.forEach((rgb, i) => rgbToChw(rgb, resolution, pixels, i * imageSize));
      const codes = noGrad(() => tidy(() => model.encode(Tensor.from(pixels, [kept.length, 3, resolution, resolution], 'f32', model.device)).toArray())) as Int32Array; // pixels in, codes out
      chunks.push(Int32Array.from(codes));
    }
    events.emit({ type: 'progress', task, step: Math.min(records.length, start + ENCODE_BATCH), total: records.length, unit: 'image' });
  }
  events.emit({ type: 'done', task });
  if (captions.length === 0) {
    throw new DataError(
      `no captioned image could be encoded from ${source.path} (${skipped.describe()})`,
      'the prior needs images with captions: a folder of images with .txt captions beside them, or a manifest with captions; `dalle dataset inspect PATH` shows what is skipped and why',
    );
  }
  const tokens = new Int32Array(captions.length * grid);
  let offset = 0;
  for (const c of chunks) {
    tokens.set(c, offset);
    offset += c.length;
  }
  return { split: { tokens, shape: [captions.length, gridSide, gridSide], captions }, skipped: skipped.toJSON() };
}
