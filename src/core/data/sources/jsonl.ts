/**
 * A JSON Lines manifest: one object per line, `{"image": "cats/1.png", "caption": "a cat"}`. `caption` may be an
 * array (several captions, one drawn per epoch) or absent; `captions` is accepted as well. Blank lines are passed
 * over; a line that is not such an object is reported as 'bad-manifest-entry' with its line number.
 */
import * as path from 'node:path';
import { readTextFileSync, TEXT_LIMITS } from '../../io/text-file';
import { SkipReport } from '../skips';
import { captionsFrom, ManifestEntry, manifestRecords } from './manifest';
import { DataSource, SourceOptions } from './types';

export async function openJsonlSource(manifest: string, options: SourceOptions = {}): Promise<DataSource> {
  const name = path.basename(manifest);
  const lines = readTextFileSync(manifest, TEXT_LIMITS.manifest).split('\n');
  const entries: ManifestEntry[] = [];
  lines.forEach((line, i) => {
    if (line.trim() !== '') entries.push(parseLine(line, `${name}:${i + 1}`));
  });
  const skipped = new SkipReport();
  const records = await manifestRecords(manifest, entries, skipped, options);
  return { kind: 'jsonl', path: manifest, records, skipped };
}

function parseLine(line: string, where: string): ManifestEntry {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    return { where, problem: `not JSON: ${(error as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { where, problem: 'expected an object like {"image": "a.png", "caption": "..."}' };
  }
  const fields = value as Record<string, unknown>;
  if (typeof fields.image !== 'string' || fields.image === '') {
    return { where, problem: 'no "image" path (a non-empty string)' };
  }
  const captions = captionsFrom(fields.caption ?? fields.captions);
  if (captions === undefined) return { where, problem: '"caption" must be a string or an array of strings' };
  return { where, image: fields.image, captions };
}
