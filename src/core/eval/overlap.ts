/**
 * The DALL-E paper's data-overlap check (Ramesh et al. 2021, Section 3.2 and Appendix: near-duplicates of the
 * evaluation images among the training images): every training image and every query image (generated samples, or a
 * test split) is embedded by a CLIP image tower; for each query its K most similar training images by cosine
 * similarity are listed, and a query whose nearest training image is at or above a threshold is flagged as a likely
 * duplicate. Images are decoded as the data loader does (alpha onto white, short side to the CLIP's side, centre
 * crop). Embeddings are float32; norms, dot products and cosines are float64.
 *
 * Key: T = training images, Q = query images, E = embedding size, K = neighbours kept, S = the CLIP's image side.
 */
import * as path from 'node:path';
import sharp from 'sharp';
import { openDataSource } from '../data';
import { DataError, SkipError } from '../data/errors';
import { DEFAULT_MAX_INPUT_PIXELS, decodeImage, rgbToChw } from '../data/image';
import { SkipReport, SkipSummary } from '../data/skips';
import { DataRecord } from '../data/sources/types';
import { EventSink, silentSink } from '../events';
import { writeFileAtomicSync } from '../io/atomic';
import { makeOutputFolder } from '../io/preflight';
import type { ClipScorer } from '../models/clip/scorer';
import { reportFiles } from './report';

/** Images per call of the image tower. */
const EMBED_BATCH = 64;
/** Side of the thumbnails in the HTML page (pixels). */
const THUMB = 64;
/** Queries shown in the HTML page when none is flagged (the most similar ones). */
const SHOWN_WHEN_NONE_FLAGGED = 12;

/** One data set embedded: (N, E) unit vectors and what each row is. */
export interface EmbeddedSet {
  readonly path: string;
  readonly records: readonly DataRecord[];
  /** (N, E) float32, row i for records[i]. */
  readonly embeddings: Float32Array;
  readonly dim: number;
  readonly skipped: SkipSummary;
}

/** Embeds every readable image of a data source with the scorer's image tower, in source order, in batches. */
export async function embedDataset(
  scorer: ClipScorer, dataPath: string, options: { limit?: number; batchSize?: number; events?: EventSink; task?: string } = {},
): Promise<EmbeddedSet> {
  const events = options.events ?? silentSink;
  const task = options.task ?? 'embed';
  const source = await openDataSource(dataPath);
  const skipped = new SkipReport();
  skipped.merge(source.skipped);
  const all = options.limit ? source.records.slice(0, options.limit) : source.records;
  const S = scorer.imageSize;
  const plane = 3 * S * S;
  const batch = Math.max(1, options.batchSize ?? EMBED_BATCH);
  const kept: DataRecord[] = [];
  const rows: Float32Array[] = [];
  for (let start = 0; start < all.length; start += batch) {
    const part = all.slice(start, start + batch);
    const decoded = await Promise.all(
      part.map(async (r) => {
        try {
          return await decodeImage(r.file ?? (await r.load()), { resolution: S, maxInputPixels: DEFAULT_MAX_INPUT_PIXELS });
        } catch (error) {
          if (!(error instanceof SkipError)) throw error;
          skipped.add(error.reason, r.id, error.detail);
          return undefined;
        }
      }),
    );
    const good: Uint8Array[] = [];
    decoded.forEach((d, i) => {
      if (d === undefined) return;
      good.push(d);
      kept.push(part[i]);
    });
    if (good.length > 0) {
      const pixels = new Float32Array(good.length * plane); // (n, 3, S, S) in [0, 1]
      good.forEach((rgb, i) => rgbToChw(rgb, S, pixels, i * plane));
      rows.push(...(await scorer.embedImages({ pixels, shape: [good.length, 3, S, S] })));
    }
    events.emit({ type: 'progress', task, step: Math.min(all.length, start + batch), total: all.length, unit: 'image' });
  }
  events.emit({ type: 'done', task });
  if (kept.length === 0) {
    throw new DataError(`${dataPath}: no readable image (${all.length} records, ${skipped.total} skipped)`, '`dalle dataset inspect PATH` lists what is skipped and why');
  }
  const dim = rows[0].length;
  const embeddings = new Float32Array(kept.length * dim);
  rows.forEach((r, i) => embeddings.set(r, i * dim));
  return { path: dataPath, records: kept, embeddings, dim, skipped: skipped.toJSON() };
}

/**
 * For each query row of `queries` (Q, E), the K rows of `train` (T, E) of highest cosine similarity, best first (ties
 * by lower index). Cosine in float64: dot / (|q| |t|), whatever the inputs' normalisation.
 */
export function nearestNeighbours(queries: Float32Array, train: Float32Array, dim: number, k: number): Array<Array<{ index: number; similarity: number }>> {
  const Q = queries.length / dim;
  const T = train.length / dim;
  if (!Number.isInteger(Q) || !Number.isInteger(T)) throw new RangeError(`dalle: nearestNeighbours: ${queries.length} and ${train.length} values are not rows of ${dim}`);
  const norms = (m: Float32Array, n: number): Float64Array => {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let e = 0; e < dim; e++) s += m[i * dim + e] * m[i * dim + e];
      out[i] = Math.sqrt(s) || 1; // a zero vector has cosine 0 with everything
    }
    return out;
  };
  const tn = norms(train, T);
  const qn = norms(queries, Q);
  const K = Math.min(k, T);
  const result: Array<Array<{ index: number; similarity: number }>> = [];
  for (let q = 0; q < Q; q++) {
    const top: Array<{ index: number; similarity: number }> = []; // sorted, best first, at most K
    const qo = q * dim;
    for (let t = 0; t < T; t++) {
      const to = t * dim;
      let dot = 0;
      for (let e = 0; e < dim; e++) dot += queries[qo + e] * train[to + e];
      const sim = dot / (qn[q] * tn[t]);
      if (top.length === K && sim <= top[K - 1].similarity) continue;
      let at = top.length;
      while (at > 0 && top[at - 1].similarity < sim) at--;
      top.splice(at, 0, { index: t, similarity: sim });
      if (top.length > K) top.pop();
    }
    result.push(top);
  }
  return result;
}

export interface OverlapNeighbour {
  readonly id: string;
  readonly file?: string;
  readonly similarity: number;
}

export interface OverlapQuery {
  readonly id: string;
  readonly file?: string;
  readonly nearest: readonly OverlapNeighbour[];
  readonly flagged: boolean;
}

export interface OverlapReport {
  readonly title: string;
  readonly clip: { readonly name: string; readonly details: Readonly<Record<string, string | number>>; readonly imageSize: number; readonly dim: number };
  readonly threshold: number;
  readonly topK: number;
  readonly train: { readonly path: string; readonly images: number; readonly skipped: SkipSummary };
  readonly queries: { readonly path: string; readonly images: number; readonly skipped: SkipSummary };
  readonly flagged: number;
  /** Over the queries' nearest-neighbour similarities: min, mean, median, max. */
  readonly nearestSimilarity: { readonly min: number; readonly mean: number; readonly median: number; readonly max: number };
  readonly results: readonly OverlapQuery[];
  readonly createdAt: string;
}

export interface OverlapOptions {
  readonly scorer: ClipScorer;
  readonly train: string;
  readonly queries: string;
  readonly threshold: number;
  readonly topK: number;
  readonly limit?: number;
  readonly batchSize?: number;
  readonly events?: EventSink;
}

/** Embeds both sets and lists each query's nearest training images (see the file comment). */
export async function findOverlap(options: OverlapOptions): Promise<OverlapReport> {
  const { scorer, threshold, topK } = options;
  if (!(threshold >= -1 && threshold <= 1)) throw new RangeError(`dalle: the similarity threshold must be in [-1, 1], got ${threshold}`);
  if (!(Number.isInteger(topK) && topK >= 1)) throw new RangeError(`dalle: top K must be a positive integer, got ${topK}`);
  const events = options.events ?? silentSink;
  const train = await embedDataset(scorer, options.train, { limit: options.limit, batchSize: options.batchSize, events, task: 'embed train' });
  const queries = await embedDataset(scorer, options.queries, { limit: options.limit, batchSize: options.batchSize, events, task: 'embed queries' });
  events.emit({ type: 'stage', name: 'similarities', detail: `${queries.records.length} queries x ${train.records.length} training images` });
  const nn = nearestNeighbours(queries.embeddings, train.embeddings, train.dim, topK);
  const results: OverlapQuery[] = nn.map((list, q) => ({
    id: queries.records[q].id,
    ...(queries.records[q].file !== undefined ? { file: queries.records[q].file } : {}),
    nearest: list.map(({ index, similarity }) => ({
      id: train.records[index].id,
      ...(train.records[index].file !== undefined ? { file: train.records[index].file } : {}),
      similarity,
    })),
    flagged: list.length > 0 && list[0].similarity >= threshold,
  }));
  const best = results.map((r) => r.nearest[0]?.similarity ?? Number.NaN).sort((a, b) => a - b);
  const mid = best.length >> 1;
  return {
    title: `Data overlap: ${queries.records.length} queries against ${train.records.length} training images`,
    clip: { name: scorer.name, details: scorer.details, imageSize: scorer.imageSize, dim: train.dim },
    threshold,
    topK,
    train: { path: options.train, images: train.records.length, skipped: train.skipped },
    queries: { path: options.queries, images: queries.records.length, skipped: queries.skipped },
    flagged: results.filter((r) => r.flagged).length,
    nearestSimilarity: {
      min: best[0],
      mean: best.reduce((s, v) => s + v, 0) / best.length,
      median: best.length % 2 ? best[mid] : (best[mid - 1] + best[mid]) / 2,
      max: best[best.length - 1],
    },
    results,
    createdAt: new Date().toISOString(),
  };
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A PNG thumbnail of an image file as a data: URL (undefined when it cannot be read). */
async function thumbnail(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  try {
    const rgb = await decodeImage(file, { resolution: THUMB, maxInputPixels: DEFAULT_MAX_INPUT_PIXELS });
    const png = await sharp(Buffer.from(rgb), { raw: { width: THUMB, height: THUMB, channels: 3 } }).png({ compressionLevel: 9 }).toBuffer();
    return `data:image/png;base64,${png.toString('base64')}`;
  } catch {
    return undefined;
  }
}

/**
 * The report as a self-contained HTML page: each flagged query (or, when none is flagged, the most similar queries)
 * beside its nearest training images with their similarities; thumbnails inline as base64 PNGs.
 */
export async function renderOverlapHtml(report: OverlapReport): Promise<string> {
  const flagged = report.results.filter((r) => r.flagged);
  const shown = flagged.length > 0
    ? flagged
    : [...report.results].sort((a, b) => (b.nearest[0]?.similarity ?? -2) - (a.nearest[0]?.similarity ?? -2)).slice(0, SHOWN_WHEN_NONE_FLAGGED);
  const cell = async (label: string, file: string | undefined, note: string, mark: boolean): Promise<string> => {
    const src = await thumbnail(file);
    const img = src ? `<img src="${src}" width="${THUMB}" height="${THUMB}" alt="${escapeHtml(label)}">` : '<div class="none">no preview</div>';
    return `<td${mark ? ' class="dup"' : ''}>${img}<div class="id">${escapeHtml(label)}</div><div>${escapeHtml(note)}</div></td>`;
  };
  const rows: string[] = [];
  for (const r of shown) {
    const cells = [await cell(r.id, r.file, r.flagged ? 'flagged' : 'query', false)];
    for (const n of r.nearest) cells.push(await cell(n.id, n.file, `cos ${n.similarity.toFixed(4)}`, n.similarity >= report.threshold));
    rows.push(`<tr>${cells.join('')}</tr>`);
  }
  const s = report.nearestSimilarity;
  const what = flagged.length > 0
    ? `${flagged.length} of ${report.queries.images} queries have a training image at cosine similarity >= ${report.threshold}: each row is a flagged query (left) and its ${report.topK} nearest training images.`
    : `No query has a training image at cosine similarity >= ${report.threshold}. Shown: the ${shown.length} queries closest to a training image, with their ${report.topK} nearest training images.`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dalle evaluate overlap</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td{border:1px solid #ccc;padding:4px;text-align:center;font-size:12px;vertical-align:top}td:first-child{background:#f4f4f4}td.dup{background:#fdd}.id{max-width:${THUMB + 40}px;overflow-wrap:anywhere;color:#555}img{image-rendering:pixelated}code{font-size:90%}</style>
</head><body>
<h1>${escapeHtml(report.title)}</h1>
<ul>
<li>CLIP image tower: <code>${escapeHtml(report.clip.name)}</code> (${report.clip.imageSize} px input, ${report.clip.dim}-d embeddings)</li>
<li>training images: <code>${escapeHtml(report.train.path)}</code>, ${report.train.images}${report.train.skipped.total ? `, ${report.train.skipped.total} skipped` : ''}</li>
<li>queries: <code>${escapeHtml(report.queries.path)}</code>, ${report.queries.images}${report.queries.skipped.total ? `, ${report.queries.skipped.total} skipped` : ''}</li>
<li>nearest-neighbour cosine over the queries: min ${s.min.toFixed(4)}, median ${s.median.toFixed(4)}, mean ${s.mean.toFixed(4)}, max ${s.max.toFixed(4)}</li>
<li>measured ${escapeHtml(report.createdAt)}</li>
</ul>
<p>${escapeHtml(what)}</p>
<table><tbody>
${rows.join('\n')}
</tbody></table>
</body></html>
`;
}

/** Writes OUT.json and OUT.html (reportFiles), atomically, creating their folder; returns both paths. */
export async function writeOverlapReport(out: string, report: OverlapReport): Promise<{ json: string; html: string }> {
  const { json, html } = reportFiles(out);
  makeOutputFolder(path.dirname(path.resolve(json)));
  writeFileAtomicSync(json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileAtomicSync(html, await renderOverlapHtml(report));
  return { json, html };
}
