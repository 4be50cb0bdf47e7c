/**
 * A CSV manifest with a header row naming its columns: the image path in `image` (or `path`, `file`, `filename`),
 * captions in `caption` (or `captions`, `text`; several captions as lines of one quoted cell). Column names are
 * matched without regard to case. A row without an image path is reported as 'bad-manifest-entry' with its line.
 */
import * as path from 'node:path';
import { readTextFileSync, TEXT_LIMITS } from '../../io/text-file';
import { DataError } from '../errors';
import { SkipReport } from '../skips';
import { parseCsv } from './csv-parse';
import { captionsFrom, ManifestEntry, manifestRecords } from './manifest';
import { DataSource, SourceOptions } from './types';

const IMAGE_COLUMNS = ['image', 'path', 'file', 'filename'];
const CAPTION_COLUMNS = ['caption', 'captions', 'text'];

export async function openCsvSource(manifest: string, options: SourceOptions = {}): Promise<DataSource> {
  const name = path.basename(manifest);
  const { rows, error } = parseCsv(readTextFileSync(manifest, TEXT_LIMITS.manifest));
  const [header, ...body] = rows;
  const columns = (header?.fields ?? []).map((column) => column.trim().toLowerCase());
  const imageColumn = columns.findIndex((column) => IMAGE_COLUMNS.includes(column));
  if (imageColumn < 0) {
    throw new DataError(
      `${manifest}: the header row has no image column (found: ${columns.join(', ') || 'nothing'})`,
      `name the image column one of ${IMAGE_COLUMNS.join(', ')} in the first row, e.g. "image,caption"`,
    );
  }
  const captionColumn = columns.findIndex((column) => CAPTION_COLUMNS.includes(column));

  const entries: ManifestEntry[] = body.map(({ line, fields }) => {
    const where = `${name}:${line}`;
    const image = (fields[imageColumn] ?? '').trim();
    if (image === '') return { where, problem: `no image path in column "${columns[imageColumn]}"` };
    return { where, image, captions: captionColumn < 0 ? [] : (captionsFrom(fields[captionColumn] ?? '') ?? []) };
  });
  const skipped = new SkipReport();
  if (error !== undefined) skipped.add('bad-manifest-entry', `${name}:${error.line}`, `${error.message}; rest of file`);
  const records = await manifestRecords(manifest, entries, skipped, options);
  return { kind: 'csv', path: manifest, records, skipped };
}
