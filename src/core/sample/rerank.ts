/**
 * Reranking generated images with a CLIP, as the DALL-E paper did (Section 2.5: 512 samples per caption, the best
 * by CLIP score kept): every candidate image is scored against its own caption, the candidates of each caption are
 * ranked (rank 1 = highest score) and the best K kept.
 *
 * Two inputs, one output layout:
 *   - a `dalle generate` folder (results.jsonl + PNGs + generation.json): the records are scored where they are;
 *   - a plain folder of PNGs named as generate names them, c{caption}-s{sample}.png (caption = the 0-based line of a
 *     captions file, blank lines skipped as generate does), plus that captions file: records are made for them.
 * Either way the folder then holds
 *   DIR/results.jsonl  each record gains clip_score (100 * max(cos, 0)), rank (1 = best of its caption's candidates)
 *                      and kept (rank <= K); rewritten atomically in one piece (so: rerank after every shard is done)
 *   DIR/best/          copies of the kept PNGs under their own names (other PNGs there are removed)
 *   DIR/rerank.json    the CLIP, K and the means: of all candidates (what an unreranked sample scores on average) and
 *                      of the kept ones
 *   DIR/index.html     the gallery again, each caption's candidates sorted by rank, scores shown, kept ones framed
 * The folder must be rerank's to write: a generate folder holds generation.json (or rerank.json), and in a plain folder
 * of images results.jsonl, rerank.json, index.html and best/ must be absent unless rerank.json says an earlier rerank
 * wrote them (checkGenerationFolder, checkImagesFolder; io/output-folder.ts).
 * Reranking is idempotent: scores already in results.jsonl under the same CLIP (rerank.json names it) are reused,
 * and only records without one (new or regenerated images) are scored.
 * Key: N = candidates, E = embedding size, H x W = image size.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp, { type OutputInfo } from 'sharp';
import { EventSink, silentSink } from '../events';
import { writeFileAtomicSync } from '../io/atomic';
import { checkOutputEntries, claimOutputFolder } from '../io/output-folder';
import { makeOutputFolder, preflightOutputFolder } from '../io/preflight';
import type { ClipScorer } from '../models/clip/scorer';
import { clipScoreOf } from '../models/clip/scorer';
import { GALLERY_FILE, RESULTS_FILE, SETTINGS_FILE, escapeHtml, galleryPage, isCompletePng, readResults } from './output';

export const RERANK_FILE = 'rerank.json';
export const BEST_DIR = 'best';

/** Inputs that cannot be reranked as asked; `hint` says what to do. Exit code 4 (input). */
export class RerankError extends Error {
  override readonly name = 'RerankError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** One candidate image: the fields reranking needs; a generate record's other fields ride along unchanged. */
export interface Candidate {
  readonly caption_index: number;
  readonly caption: string;
  readonly sample: number;
  /** Relative to the folder. */
  readonly file: string;
  readonly [field: string]: unknown;
}

export type RankedCandidate = Candidate & { readonly clip_score: number; readonly rank: number; readonly kept: boolean };

export interface RerankOptions {
  /** Candidates kept per caption (>= 1). */
  readonly keep: number;
  /** Score every candidate again, even those scored before under the same CLIP. */
  readonly rescore?: boolean;
  /** Rank a generate folder that lacks some of its images (otherwise an error). */
  readonly partial?: boolean;
  /** Images embedded at a time. */
  readonly batch?: number;
  readonly events?: EventSink;
}

export interface RerankSummary {
  readonly dir: string;
  readonly clip: string;
  readonly captions: number;
  readonly candidates: number;
  /** Candidates scored now, and those whose earlier score was reused. */
  readonly scored: number;
  readonly reused: number;
  readonly keep: number;
  readonly kept: number;
  /** Mean CLIP score of all candidates: the expected score of one unreranked sample. */
  readonly meanClipScore: number;
  /** Mean CLIP score of the kept candidates. */
  readonly meanKeptClipScore: number;
  readonly results: string;
  readonly best: string;
  readonly gallery: string;
}

/**
 * Ranks of the candidates within their captions: 1 = highest score. Ties go to the lower sample index, so the
 * ranks of each caption are a permutation of 1..count whatever the scores.
 */
export function rankWithinCaptions(items: readonly { caption_index: number; sample: number; clip_score: number }[]): number[] {
  const order = items.map((_, i) => i);
  order.sort((a, b) => items[a].caption_index - items[b].caption_index || items[b].clip_score - items[a].clip_score || items[a].sample - items[b].sample);
  const ranks = new Array<number>(items.length);
  let rank = 0;
  let caption = NaN;
  for (const i of order) {
    rank = items[i].caption_index === caption ? rank + 1 : 1;
    caption = items[i].caption_index;
    ranks[i] = rank;
  }
  return ranks;
}

/** Decodes a PNG (or any image sharp reads) at its own size into (3, H, W) floats in [0, 1], alpha flattened onto white. */
export async function loadImagePlanes(file: string): Promise<{ pixels: Float32Array; height: number; width: number }> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await sharp(file, { failOn: 'warning' }).flatten({ background: { r: 255, g: 255, b: 255 } }).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw new RerankError(`cannot read the image ${file}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`, 'regenerate it (rerun the same `dalle generate` command) or remove it');
  }
  const { width: W, height: H } = out.info;
  const plane = H * W;
  const pixels = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) pixels[c * plane + p] = out.data[p * 3 + c] / 255;
  return { pixels, height: H, width: W };
}

/**
 * The CLIP score of each file against its caption: captions embedded once each, images `batch` at a time (grouped
 * by size, since the scorer takes one (N, 3, H, W) block per call).
 */
export async function scoreImages(
  scorer: ClipScorer,
  items: readonly { caption: string; file: string }[],
  options: { batch?: number; events?: EventSink } = {},
): Promise<number[]> {
  const events = options.events ?? silentSink;
  const batch = Math.max(1, options.batch ?? 32);
  const unique = [...new Set(items.map((it) => it.caption))];
  const textOf = new Map<string, Float32Array>();
  (await scorer.embedTexts(unique)).forEach((e, i) => textOf.set(unique[i], e));
  const scores = new Array<number>(items.length);
  for (let start = 0; start < items.length; start += batch) {
    const part = items.slice(start, start + batch);
    const loaded = await Promise.all(part.map((it) => loadImagePlanes(it.file)));
    const bySize = new Map<string, number[]>();
    loaded.forEach((img, i) => {
      const key = `${img.height}x${img.width}`;
      if (!bySize.has(key)) bySize.set(key, []);
      bySize.get(key)!.push(i);
    });
    for (const members of bySize.values()) {
      const { height: H, width: W } = loaded[members[0]];
      const pixels = new Float32Array(members.length * 3 * H * W); // (n, 3, H, W)
      members.forEach((i, n) => pixels.set(loaded[i].pixels, n * 3 * H * W));
      const embedded = await scorer.embedImages({ pixels, shape: [members.length, 3, H, W] });
      members.forEach((i, n) => (scores[start + i] = clipScoreOf(textOf.get(part[i].caption)!, embedded[n])));
    }
    events.emit({ type: 'progress', task: 'rerank', step: Math.min(start + batch, items.length), total: items.length, unit: 'image' });
  }
  if (items.length > 0) events.emit({ type: 'done', task: 'rerank' });
  return scores;
}

/**
 * Refuses (OutputPathError, exit 4) a DIR that is not a folder generate or rerank wrote (no generation.json nor
 * rerank.json), or that cannot be written, before the CLIP is loaded.
 */
export function checkGenerationFolder(dir: string): void {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new RerankError(`${dir} is not a folder`, 'give the --out folder of a `dalle generate` run');
  }
  claimOutputFolder(
    dir,
    { command: '`dalle generate`', marks: [SETTINGS_FILE, RERANK_FILE], hint: 'give the --out folder of a `dalle generate` run, or rerank a folder of images with --captions FILE --images DIR' },
    { flag: 'DIR' },
  );
}

/**
 * Refuses a `dalle generate` folder given as --images (RerankError), and (OutputPathError, exit 4) an --images DIR
 * where rerank's outputs (results.jsonl, rerank.json, index.html, best/) would replace files it did not write, or that
 * cannot be written, before the CLIP is loaded.
 */
export function checkImagesFolder(dir: string): void {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new RerankError(`${dir} is not a folder`, 'give --images DIR, a folder of PNGs named c00000-s000.png, ...');
  if (fs.existsSync(path.join(dir, SETTINGS_FILE))) {
    throw new RerankError(`${dir} is a \`dalle generate\` folder (it has ${SETTINGS_FILE}); its captions are in ${RESULTS_FILE}`, `run \`dalle rerank --clip MODEL ${dir}\` without --captions / --images`);
  }
  preflightOutputFolder(dir, { flag: '--images' });
  checkOutputEntries(dir, { command: 'dalle rerank', flag: '--images', mark: RERANK_FILE, writes: [RESULTS_FILE, RERANK_FILE, GALLERY_FILE, BEST_DIR] });
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Reranks a `dalle generate` output folder in place (see the module comment). */
export async function rerankGeneration(scorer: ClipScorer, dir: string, options: RerankOptions): Promise<RerankSummary> {
  checkKeep(options.keep);
  checkGenerationFolder(dir);
  const settings = readJson(path.join(dir, SETTINGS_FILE));
  let records: Candidate[] = readResults(dir) as unknown as Candidate[];
  if (records.length === 0) {
    throw new RerankError(
      `${dir} has no ${RESULTS_FILE} records (not a \`dalle generate\` folder, or nothing generated yet)`,
      'give the --out folder of a `dalle generate` run, or a plain folder of images with --captions FILE --images DIR',
    );
  }
  if (settings && Number.isInteger(settings.captions) && Number.isInteger(settings.samples)) {
    const captions = settings.captions as number;
    const samples = settings.samples as number;
    records = records.filter((r) => r.caption_index < captions && r.sample < samples);
    const expected = captions * samples;
    if (records.length < expected && !options.partial) {
      throw new RerankError(
        `${dir} holds ${records.length} of the ${expected} images its generation.json asks for (${captions} captions x ${samples} samples)`,
        'finish the generation first (rerun the same `dalle generate` command, or every --shard), or pass --partial to rank what is there',
      );
    }
  }
  const missing = records.filter((r) => !isCompletePng(path.join(dir, r.file)));
  if (missing.length > 0) {
    throw new RerankError(
      `${missing.length} image(s) named in ${path.join(dir, RESULTS_FILE)} are missing or incomplete: ${missing.slice(0, 5).map((r) => r.file).join(', ')}${missing.length > 5 ? ', ...' : ''}`,
      'rerun the same `dalle generate` command: it regenerates missing and damaged images',
    );
  }
  const previous = readJson(path.join(dir, RERANK_FILE));
  const reuse = !options.rescore && previous?.clip === scorer.name;
  return finishRerank(scorer, dir, records, reuse, options, settingsLine(settings));
}

/**
 * Reranks a plain folder of PNGs named c{caption}-s{sample}.png against `captions` (index = line), writing the
 * records into the folder (see the module comment).
 */
export async function rerankFolder(scorer: ClipScorer, captions: readonly string[], dir: string, options: RerankOptions): Promise<RerankSummary> {
  checkKeep(options.keep);
  if (captions.length === 0) throw new RerankError('no captions given', 'give --captions FILE with one caption a line');
  checkImagesFolder(dir);
  const files = fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile() && /\.png$/i.test(e.name)).map((e) => e.name).sort();
  const pattern = /^c(\d+)-s(\d+)\.png$/;
  const misnamed = files.filter((f) => !pattern.test(f));
  if (misnamed.length > 0) {
    throw new RerankError(
      `${misnamed.length} PNG(s) in ${dir} are not named c{caption}-s{sample}.png: ${misnamed.slice(0, 5).join(', ')}${misnamed.length > 5 ? ', ...' : ''}`,
      'name each image c<caption line, from 0>-s<sample>.png (as `dalle generate` does), or move the others out',
    );
  }
  if (files.length === 0) throw new RerankError(`${dir} has no PNG images`, 'give --images DIR, a folder of PNGs named c00000-s000.png, c00000-s001.png, ...');
  const records: Candidate[] = files.map((file) => {
    const m = pattern.exec(file)!;
    const caption_index = Number(m[1]);
    if (caption_index >= captions.length) {
      throw new RerankError(
        `${path.join(dir, file)} is an image of caption ${caption_index} (0-based), but the captions file has ${captions.length} caption(s)`,
        'give the captions file the images were generated from (one caption a line, blank lines skipped)',
      );
    }
    return { caption_index, caption: captions[caption_index], sample: Number(m[2]), file };
  });
  const present = new Set(records.map((r) => r.caption_index));
  const without = captions.map((_, i) => i).filter((i) => !present.has(i));
  if (without.length > 0) {
    throw new RerankError(
      `${without.length} of ${captions.length} caption(s) have no image in ${dir}: line(s) ${without.slice(0, 5).map((i) => i + 1).join(', ')}${without.length > 5 ? ', ...' : ''} (e.g. ${JSON.stringify(captions[without[0]])})`,
      'give the captions file the images were generated from, in the same order',
    );
  }
  return finishRerank(scorer, dir, records, false, options, `captions ${captions.length}, images from ${dir}`);
}

function checkKeep(keep: number): void {
  if (!(Number.isSafeInteger(keep) && keep >= 1)) throw new RangeError(`keep must be an integer >= 1, got ${keep}`);
}

function settingsLine(settings: Record<string, unknown> | undefined): string {
  if (!settings) return '';
  const s = settings;
  return `seed ${s.seed}, temperature ${s.temperature}, top-k ${s.top_k || 'off'}, top-p ${s.top_p === 1 ? 'off' : s.top_p}, cond-scale ${s.cond_scale}`;
}

async function finishRerank(scorer: ClipScorer, dir: string, records: Candidate[], reuse: boolean, options: RerankOptions, settings: string): Promise<RerankSummary> {
  const events = options.events ?? silentSink;
  const keep = options.keep;
  const known = (r: Candidate): boolean => reuse && typeof r.clip_score === 'number' && Number.isFinite(r.clip_score);
  const todo = records.filter((r) => !known(r));
  events.emit({ type: 'stage', name: 'reranking', detail: `${records.length} candidates of ${new Set(records.map((r) => r.caption_index)).size} captions under ${scorer.name}${todo.length < records.length ? ` (${records.length - todo.length} scored before)` : ''}, keeping ${keep} per caption` });
  const fresh = await scoreImages(scorer, todo.map((r) => ({ caption: r.caption, file: path.join(dir, r.file) })), { batch: options.batch, events });
  const scoreOf = new Map<Candidate, number>(todo.map((r, i) => [r, fresh[i]]));
  const scored = records.map((r) => ({ ...r, clip_score: scoreOf.get(r) ?? (r.clip_score as number) }));
  const ranks = rankWithinCaptions(scored);
  const ranked: RankedCandidate[] = scored.map((r, i) => ({ ...r, rank: ranks[i], kept: ranks[i] <= keep }));

  // results.jsonl in one atomic piece, caption then sample order as readResults gives it.
  const results = path.join(dir, RESULTS_FILE);
  writeFileAtomicSync(results, ranked.map((r) => JSON.stringify(r)).join('\n') + '\n');

  // best/: the kept PNGs, nothing else.
  const best = path.join(dir, BEST_DIR);
  makeOutputFolder(best);
  const keptFiles = new Set(ranked.filter((r) => r.kept).map((r) => path.basename(r.file)));
  for (const name of fs.readdirSync(best)) if (/\.png$/i.test(name) && !keptFiles.has(name)) fs.rmSync(path.join(best, name));
  for (const r of ranked) if (r.kept) writeFileAtomicSync(path.join(best, path.basename(r.file)), fs.readFileSync(path.join(dir, r.file)));

  const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  const meanClipScore = mean(ranked.map((r) => r.clip_score));
  const meanKeptClipScore = mean(ranked.filter((r) => r.kept).map((r) => r.clip_score));
  const captions = new Set(ranked.map((r) => r.caption_index)).size;
  const kept = ranked.filter((r) => r.kept).length;
  writeFileAtomicSync(
    path.join(dir, RERANK_FILE),
    JSON.stringify({ clip: scorer.name, keep, captions, candidates: ranked.length, kept, mean_clip_score: meanClipScore, mean_kept_clip_score: meanKeptClipScore }, null, 2) + '\n',
  );
  const gallery = writeRankedGallery(dir, ranked, {
    title: `dalle rerank: ${captions} captions, ${ranked.length} candidates, best ${keep} kept`,
    settings: `${settings ? `${settings}; ` : ''}CLIP ${scorer.name}; mean CLIP score ${meanClipScore.toFixed(2)} of all candidates, ${meanKeptClipScore.toFixed(2)} of the kept`,
  });
  events.emit({ type: 'artifact', kind: 'results', path: results });
  events.emit({ type: 'artifact', kind: 'report', path: gallery });
  return {
    dir,
    clip: scorer.name,
    captions,
    candidates: ranked.length,
    scored: todo.length,
    reused: ranked.length - todo.length,
    keep,
    kept,
    meanClipScore,
    meanKeptClipScore,
    results,
    best,
    gallery,
  };
}

/** DIR/index.html: a row per caption, its candidates left to right by rank, CLIP score under each, kept ones framed. */
export function writeRankedGallery(dir: string, records: readonly RankedCandidate[], options: { title: string; settings?: string }): string {
  const rows = new Map<number, RankedCandidate[]>();
  for (const r of records) {
    if (!rows.has(r.caption_index)) rows.set(r.caption_index, []);
    rows.get(r.caption_index)!.push(r);
  }
  const columns = Math.max(0, ...[...rows.values()].map((list) => list.length));
  const head = Array.from({ length: columns }, (_, j) => `<th>rank ${j + 1}</th>`).join('');
  const body = [...rows.keys()]
    .sort((a, b) => a - b)
    .map((i) => {
      const list = rows.get(i)!.slice().sort((a, b) => a.rank - b.rank);
      const cells = list.map((r) => {
        const href = escapeHtml(encodeURI(r.file));
        const ll = typeof r.log_likelihood === 'number' ? `, ll ${r.log_likelihood.toFixed(1)}` : '';
        return `<td${r.kept ? ' class="kept"' : ''}><a href="${href}"><img src="${href}" alt="${escapeHtml(`${r.caption}, sample ${r.sample}`)}" loading="lazy"></a><br><span class="score" title="CLIP score, 100 * max(cos, 0)">${r.clip_score.toFixed(2)}</span><br><span class="ll">sample ${r.sample}${escapeHtml(ll)}</span></td>`;
      });
      while (cells.length < columns) cells.push('<td class="missing">-</td>');
      return `<tr><th class="caption"><span class="index">${i}</span> ${escapeHtml(list[0].caption)}</th>${cells.join('')}</tr>`;
    })
    .join('\n');
  const title = escapeHtml(options.title);
  const intro = `${records.length} images; each caption's candidates sorted by CLIP score (shown below each image), best first; the kept ones are framed in green and copied to ${BEST_DIR}/.`;
  const extraCss = 'td.kept { outline: 3px solid #2a2; outline-offset: -3px; }\n.score { font-weight: bold; font-size: 85%; }\n';
  const html = galleryPage({ title, settings: options.settings, intro, head, body, extraCss });
  const file = path.join(dir, GALLERY_FILE);
  writeFileAtomicSync(file, html);
  return file;
}
