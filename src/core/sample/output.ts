/**
 * The output folder of `dalle generate`:
 *
 *   DIR/c00012-s003.png   caption 12, sample 3 (written atomically: a reader never sees half a PNG)
 *   DIR/results.jsonl     one line per image: {caption_index, caption, sample, seed, file, log_likelihood, ...}
 *   DIR/generation.json   the settings every image in DIR was made with (a rerun with other settings is refused)
 *   DIR/index.html        a gallery: one row per caption, one column per sample, regenerated at the end of each run
 *
 * DIR is written only if it is missing, empty or holds generation.json (io/output-folder.ts): another program's
 * index.html, PNGs or results.jsonl are never overwritten or appended to.
 *
 * results.jsonl is shared by every shard writing into DIR: each record is one write(2) of one line on a file opened
 * with O_APPEND, so concurrent appends from several processes do not interleave inside a line (on local file systems;
 * on NFS, give each shard its own DIR). Readers skip a line that does not parse (a torn last line after a crash) and
 * keep the last record of each (caption, sample), so a regenerated unit replaces its old record.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic';
import { OutputFolderRule, claimOutputFolder } from '../io/output-folder';
import { makeOutputFolder } from '../io/preflight';
import { guardWriteSync } from '../io/write-errors';

export const RESULTS_FILE = 'results.jsonl';
export const SETTINGS_FILE = 'generation.json';
export const GALLERY_FILE = 'index.html';

/** A folder is generate's own when it holds generation.json (written before the first image). */
export const GENERATE_OUTPUT_RULE: OutputFolderRule = { command: 'dalle generate', marks: [SETTINGS_FILE] };

/** One generated image. */
export interface ResultRecord {
  readonly caption_index: number;
  readonly caption: string;
  readonly sample: number;
  /** The job's --seed; the image's own stream is Philox(seed).fork(caption_index).fork(sample). */
  readonly seed: number;
  /** File name relative to DIR. */
  readonly file: string;
  /** Sum of log p of the sampled image tokens under the prior (natural log; see sampler.ts). */
  readonly log_likelihood: number;
  /** Sampled tokens (prompted ones excluded). */
  readonly tokens: number;
  /** The image's token grid, prompt included, row by row (grid side^2 codes); absent in records of older versions. */
  readonly grid?: number[];
}

/** An output folder that cannot be used as asked; `hint` says what to do. Exit code 4 (input). */
export class OutputDirError extends Error {
  override readonly name = 'OutputDirError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const IEND = Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);

/**
 * Whether `file` is a complete PNG of width x height: the signature, an IHDR chunk with those sizes, and the IEND chunk
 * at the very end (a truncated file has none). Pixel data is not decoded.
 */
export function isCompletePng(file: string, width?: number, height?: number): boolean {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    return false;
  }
  if (bytes.length < PNG_SIGNATURE.length + 25 + IEND.length) return false;
  if (!bytes.subarray(0, 8).equals(PNG_SIGNATURE)) return false;
  if (bytes.toString('latin1', 12, 16) !== 'IHDR') return false;
  if (width !== undefined && bytes.readUInt32BE(16) !== width) return false;
  if (height !== undefined && bytes.readUInt32BE(20) !== height) return false;
  return bytes.subarray(bytes.length - IEND.length).equals(IEND);
}

/** Appends one record as one line, in one write on an O_APPEND descriptor (see the module comment). */
export function appendResult(dir: string, record: ResultRecord): void {
  const file = path.join(dir, RESULTS_FILE);
  guardWriteSync(file, () => {
    const fd = fs.openSync(file, 'a');
    try {
      fs.writeSync(fd, JSON.stringify(record) + '\n');
    } finally {
      fs.closeSync(fd);
    }
  });
}

/** The records of DIR/results.jsonl, the last one of each (caption, sample), sorted by caption then sample. */
export function readResults(dir: string): ResultRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, RESULTS_FILE), 'utf8');
  } catch {
    return [];
  }
  const byUnit = new Map<string, ResultRecord>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let record: ResultRecord;
    try {
      record = JSON.parse(line) as ResultRecord;
    } catch {
      continue; // a torn line from a crash mid-write
    }
    if (!Number.isInteger(record?.caption_index) || !Number.isInteger(record?.sample) || typeof record.file !== 'string') continue;
    byUnit.set(`${record.caption_index}/${record.sample}`, record);
  }
  return [...byUnit.values()].sort((a, b) => a.caption_index - b.caption_index || a.sample - b.sample);
}

/** The settings that decide the images (a rerun must match them to reuse what is there). */
export interface GenerationSettings {
  readonly prior: string;
  readonly dvae: string;
  readonly seed: number;
  readonly samples: number;
  readonly temperature: number;
  readonly top_k: number;
  readonly top_p: number;
  readonly cond_scale: number;
  /** sha256 of the captions, one per line, in order. */
  readonly captions_sha256: string;
  readonly captions: number;
  /** The image prompt: sha256 of its token grid and the rows kept; null without one. */
  readonly prompt: { readonly tokens_sha256: string; readonly keep_rows: number } | null;
  /**
   * Which networks ran: the engine's or onnxruntime's. They agree to ~1e-5 in the logits, enough to flip a rare draw,
   * so one folder holds one runtime's images (a folder from before this field counts as the engine's).
   */
  readonly runtime: 'engine' | 'onnx';
}

/**
 * Records the settings in DIR/generation.json on the first run; on a rerun (or another shard), checks that they are
 * the same, so images made with other settings are never mixed into one folder. A folder that is neither empty nor
 * generate's is refused (GENERATE_OUTPUT_RULE).
 */
export function claimOutputDir(dir: string, settings: GenerationSettings): void {
  claimOutputFolder(dir, GENERATE_OUTPUT_RULE);
  makeOutputFolder(dir);
  const file = path.join(dir, SETTINGS_FILE);
  const wanted = JSON.stringify(settings, null, 2) + '\n';
  let existing: string | undefined;
  try {
    existing = fs.readFileSync(file, 'utf8');
  } catch {
    existing = undefined;
  }
  if (existing === undefined) {
    writeFileAtomicSync(file, wanted); // shards racing here write identical contents
    return;
  }
  let old: Record<string, unknown>;
  try {
    old = JSON.parse(existing) as Record<string, unknown>;
  } catch {
    throw new OutputDirError(`${file} is not valid JSON`, `remove it (and the images in ${dir}) or choose another --out`);
  }
  if (old.runtime === undefined) old.runtime = 'engine';
  const differ = Object.keys(settings).filter((k) => JSON.stringify(old[k]) !== JSON.stringify((settings as unknown as Record<string, unknown>)[k]));
  if (differ.length > 0) {
    const show = differ.map((k) => `${k}: ${JSON.stringify(old[k])} there, ${JSON.stringify((settings as unknown as Record<string, unknown>)[k])} now`).join('; ');
    throw new OutputDirError(
      `${dir} holds images generated with other settings (${show})`,
      'choose another --out for these settings, or rerun with the same captions, models and sampling flags to complete that folder',
    );
  }
}

/** The gallery page around its table rows: one look for generate's and rerank's galleries. Strings are HTML. */
export function galleryPage(parts: { title: string; settings?: string; intro: string; head: string; body: string; extraCss?: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${parts.title}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px; text-align: center; vertical-align: top; }
th.caption { text-align: left; max-width: 18em; font-weight: normal; }
.index { color: #888; font-size: 80%; }
img { width: 128px; height: 128px; image-rendering: pixelated; display: block; }
${parts.extraCss ?? ''}.ll { color: #666; font-size: 75%; }
.missing { color: #bbb; }
</style>
</head>
<body>
<h1>${parts.title}</h1>
${parts.settings ? `<p>${escapeHtml(parts.settings)}</p>\n` : ''}<p>${parts.intro}</p>
<table>
<thead><tr><th>caption</th>${parts.head}</tr></thead>
<tbody>
${parts.body}
</tbody>
</table>
</body>
</html>
`;
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** DIR/index.html from the records: captions as rows, samples as columns, relative links, escaped text. */
export function writeGallery(dir: string, records: readonly ResultRecord[], options: { title?: string; settings?: string } = {}): string {
  const rows = new Map<number, ResultRecord[]>();
  let columns = 0;
  for (const r of records) {
    if (!rows.has(r.caption_index)) rows.set(r.caption_index, []);
    rows.get(r.caption_index)!.push(r);
    columns = Math.max(columns, r.sample + 1);
  }
  const title = escapeHtml(options.title ?? 'dalle generate');
  const head = Array.from({ length: columns }, (_, j) => `<th>sample ${j}</th>`).join('');
  const body = [...rows.keys()]
    .sort((a, b) => a - b)
    .map((i) => {
      const cells: string[] = Array.from({ length: columns }, () => '<td class="missing">-</td>');
      const list = rows.get(i)!;
      for (const r of list) {
        const href = encodeURI(r.file);
        const ll = Number.isFinite(r.log_likelihood) ? r.log_likelihood.toFixed(1) : String(r.log_likelihood);
        cells[r.sample] = `<td><a href="${escapeHtml(href)}"><img src="${escapeHtml(href)}" alt="${escapeHtml(`${list[0].caption}, sample ${r.sample}`)}" loading="lazy"></a><br><span class="ll" title="log-likelihood of the image tokens under the prior">${escapeHtml(ll)}</span></td>`;
      }
      return `<tr><th class="caption"><span class="index">${i}</span> ${escapeHtml(list[0].caption)}</th>${cells.join('')}</tr>`;
    })
    .join('\n');
  const intro = `${records.length} images; below each, the log-likelihood of its image tokens under the prior (natural log).`;
  const html = galleryPage({ title, settings: options.settings, intro, head, body });
  const file = path.join(dir, GALLERY_FILE);
  writeFileAtomicSync(file, html);
  return file;
}
