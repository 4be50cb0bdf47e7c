/**
 * The samples a text-to-image evaluation measures: a folder in `dalle generate`'s format (src/core/sample/output.ts),
 *
 *   DIR/results.jsonl    one record per image: caption_index, caption, sample, file (a PNG name in DIR), ...;
 *                        after `dalle rerank` also clip_score, rank and kept
 *   DIR/generation.json  the settings the images were made with (optional here: a hand-made folder may lack it)
 *
 * read strictly: the file is bounded (a results line holds a token grid, so lines may be long, not endless), every
 * record names a plain file inside DIR that exists, and the last record of a (caption, sample) wins, as generate's own
 * reader decides (a regenerated image replaces its record). A line that is not JSON (a write torn by a crash, which
 * generate redoes on a rerun) is passed over and counted, as generate's reader passes it over; a JSON record without
 * the fields is refused.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../../data/errors';
import { TextFileError } from '../../io/errors';
import { readTextFileSync, TEXT_LIMITS, TextLimits } from '../../io/text-file';

export const RESULTS_FILE = 'results.jsonl';
export const GENERATION_FILE = 'generation.json';

/** results.jsonl: a line holds a caption (<= 64 Ki characters) and a token grid (a 64x64 grid is ~20 KB). */
export const RESULTS_LIMITS: TextLimits = { what: 'results file', maxBytes: 256 * 1024 * 1024, maxLineChars: 1024 * 1024 };

/** One generated image and the caption it was generated from. */
export interface GeneratedSample {
  readonly captionIndex: number;
  readonly sample: number;
  readonly caption: string;
  /** The PNG's path (DIR joined with the record's file name). */
  readonly file: string;
}

export interface SampleFolder {
  readonly dir: string;
  /** Sorted by caption index, then sample. */
  readonly samples: readonly GeneratedSample[];
  /** Records in results.jsonl (the last of each image, before `kept` selection). */
  readonly records: number;
  /** Lines of results.jsonl that are not JSON (torn writes), passed over. */
  readonly tornLines: number;
  /** DIR/generation.json as written, or null when the folder has none. */
  readonly generation: Readonly<Record<string, unknown>> | null;
  /** Whether only the images `dalle rerank` kept were taken. */
  readonly keptOnly: boolean;
}

const GENERATE_HINT = 'give a folder written by `dalle generate --captions FILE --out DIR` (or give --captions FILE to generate the samples in this command)';

/** Reads DIR's samples (see the module comment); `keptOnly` takes the images a rerank kept (`kept: true`). */
export function readSampleFolder(dir: string, options: { keptOnly?: boolean } = {}): SampleFolder {
  const stat = fs.statSync(dir, { throwIfNoEntry: false });
  if (stat === undefined) throw new DataError(`no samples folder at ${dir}: the path does not exist`, GENERATE_HINT);
  if (!stat.isDirectory()) throw new DataError(`the samples ${dir} is not a folder`, GENERATE_HINT);
  const resultsFile = path.join(dir, RESULTS_FILE);
  if (!fs.existsSync(resultsFile)) throw new DataError(`${dir} has no ${RESULTS_FILE}, so its images have no captions`, GENERATE_HINT);
  const lines = readTextFileSync(resultsFile, RESULTS_LIMITS).split('\n');
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();

  const byUnit = new Map<string, GeneratedSample & { kept?: unknown }>();
  let tornLines = 0;
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${resultsFile}, line ${i + 1}`;
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(line) as Record<string, unknown>;
    } catch {
      tornLines++; // a write torn by a crash: generate redoes that image on a rerun
      return;
    }
    const sample = checkRecord(record, where);
    byUnit.set(`${sample.captionIndex}/${sample.sample}`, { ...sample, file: path.join(dir, sample.file), kept: record.kept });
  });
  const all = [...byUnit.values()].sort((a, b) => a.captionIndex - b.captionIndex || a.sample - b.sample);
  if (all.length === 0) throw new DataError(`${resultsFile} lists no images`, GENERATE_HINT);

  let chosen = all;
  if (options.keptOnly) {
    if (!all.some((s) => typeof s.kept === 'boolean')) {
      throw new DataError(`${dir} has not been reranked (its records have no \`kept\`), so there is no kept image to take`, `rank it first with \`dalle rerank --clip RUN --keep K ${dir}\`, or leave out --kept`);
    }
    chosen = all.filter((s) => s.kept === true);
    if (chosen.length === 0) throw new DataError(`${dir}: no record is kept`, `rank it again with \`dalle rerank --clip RUN --keep K ${dir}\``);
  }
  const missing = chosen.filter((s) => !fs.statSync(s.file, { throwIfNoEntry: false })?.isFile());
  if (missing.length > 0) {
    throw new DataError(
      `${missing.length} image(s) that ${resultsFile} lists are missing: ${missing.slice(0, 3).map((s) => path.basename(s.file)).join(', ')}${missing.length > 3 ? ', ...' : ''}`,
      `run the \`dalle generate\` that made ${dir} again: it redoes missing images`,
    );
  }
  return {
    dir,
    samples: chosen.map(({ captionIndex, sample, caption, file }) => ({ captionIndex, sample, caption, file })),
    records: all.length,
    tornLines,
    generation: readGenerationSettings(dir),
    keptOnly: options.keptOnly === true,
  };
}

/** The fields of one results.jsonl record this evaluation needs, checked; `file` as written (a name in DIR). */
function checkRecord(record: Record<string, unknown>, where: string): GeneratedSample {
  const hint = 'results.jsonl records are written by `dalle generate`: {caption_index, caption, sample, file, ...}, file a PNG name in the folder';
  if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new DataError(`${where} is not a JSON object`, hint);
  const { caption_index: captionIndex, sample, caption, file } = record;
  if (!Number.isSafeInteger(captionIndex) || (captionIndex as number) < 0) throw new DataError(`${where}: caption_index ${JSON.stringify(captionIndex)} is not an integer >= 0`, hint);
  if (!Number.isSafeInteger(sample) || (sample as number) < 0) throw new DataError(`${where}: sample ${JSON.stringify(sample)} is not an integer >= 0`, hint);
  if (typeof caption !== 'string' || caption.trim() === '') throw new DataError(`${where}: caption ${JSON.stringify(caption)} is not a non-empty string`, hint);
  // A plain name: a record must not point outside the folder ('../x.png', '/etc/x.png').
  if (typeof file !== 'string' || file === '' || file !== path.basename(file) || file === '.' || file === '..' || /[\\/]/.test(file)) {
    throw new DataError(`${where}: file ${JSON.stringify(file)} is not the name of a file in the folder`, hint);
  }
  return { captionIndex: captionIndex as number, sample: sample as number, caption, file };
}

/** DIR/generation.json (bounded, JSON object), or null without one. */
function readGenerationSettings(dir: string): Readonly<Record<string, unknown>> | null {
  const file = path.join(dir, GENERATION_FILE);
  if (!fs.existsSync(file)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readTextFileSync(file, TEXT_LIMITS.runMetadata));
  } catch (error) {
    if (error instanceof TextFileError) throw error;
    throw new DataError(`${file} is not valid JSON`, `remove it, or run the \`dalle generate\` that made ${dir} again`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new DataError(`${file} is not a JSON object`, `remove it, or run the \`dalle generate\` that made ${dir} again`);
  return parsed as Record<string, unknown>;
}

/** Captions of a file: one a line (\n or \r\n), trimmed, blank lines skipped (as `dalle generate --captions` reads them). */
export function readCaptionFile(file: string): string[] {
  let text: string;
  try {
    text = readTextFileSync(file, TEXT_LIMITS.captionList);
  } catch (error) {
    if (error instanceof TextFileError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : error instanceof Error ? error.message : String(error);
    throw new DataError(`cannot read captions from ${file === '-' ? 'stdin' : file}: ${why}`, 'give a UTF-8 text file with one caption a line');
  }
  const captions = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
  if (captions.length === 0) throw new DataError(`${file === '-' ? 'stdin' : file} has no captions (it is empty or blank)`, 'write one caption a line, e.g. "red apple, noto style"');
  return captions;
}
