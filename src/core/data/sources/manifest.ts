/**
 * What JSONL and CSV manifests share once parsed: entries (image path + captions, or the problem with the line) become
 * records. Image paths are relative to the manifest's folder unless absolute. Every named file is checked once here,
 * so a manifest with wrong paths is reported at once ('missing-file') rather than batch by batch.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mapWithConcurrency } from '../concurrency';
import { SkipReport } from '../skips';
import { fileRecord } from './files';
import { DataRecord, SourceOptions } from './types';

/** One line or row of a manifest: what it names, or why it cannot be used. */
export type ManifestEntry =
  | { readonly where: string; readonly image: string; readonly captions: readonly string[] }
  | { readonly where: string; readonly problem: string };

/** File checks at once: enough to hide latency, few enough to leave the thread pool to others. */
const CHECKS_IN_FLIGHT = 16;

export async function manifestRecords(
  manifest: string,
  entries: readonly ManifestEntry[],
  skipped: SkipReport,
  options: SourceOptions,
): Promise<DataRecord[]> {
  const folder = path.dirname(manifest);
  const usable: { where: string; image: string; file: string; captions: readonly string[] }[] = [];
  for (const entry of entries) {
    if ('problem' in entry) skipped.add('bad-manifest-entry', entry.where, entry.problem);
    else if (options.requireCaptions === true && entry.captions.length === 0) {
      skipped.add('no-caption', entry.where, `no caption for ${entry.image}`);
    } else usable.push({ ...entry, file: path.resolve(folder, entry.image) });
  }
  const problems = await mapWithConcurrency(usable, CHECKS_IN_FLIGHT, (entry) => checkFile(entry.file));
  const records: DataRecord[] = [];
  usable.forEach((entry, i) => {
    const problem = problems[i];
    if (problem === undefined) records.push(fileRecord(`${entry.where} ${entry.image}`, entry.file, entry.captions));
    else skipped.add(problem.reason, `${entry.where} ${entry.image}`, problem.detail);
  });
  return records;
}

async function checkFile(file: string): Promise<{ reason: 'missing-file' | 'unreadable'; detail: string } | undefined> {
  try {
    const stat = await fs.promises.stat(file);
    return stat.isFile() ? undefined : { reason: 'unreadable', detail: `${file} is not a regular file` };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT'
      ? { reason: 'missing-file', detail: `${file} does not exist (paths are relative to the manifest's folder)` }
      : { reason: 'unreadable', detail: (error as Error).message };
  }
}

/** A caption field: a string (one caption per line) or an array of strings. */
export function captionsFrom(value: unknown): string[] | undefined {
  if (value === undefined || value === null) return [];
  if (typeof value === 'string') return splitCaptionLines(value);
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) {
    return value.flatMap(splitCaptionLines);
  }
  return undefined;
}

function splitCaptionLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '');
}
