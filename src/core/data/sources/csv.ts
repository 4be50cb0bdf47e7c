/**
 * A CSV manifest with a header row naming its columns: the image path in `image` (or `path`, `file`, `filename`),
 * captions in `caption` (or `captions`, `text`; several captions as lines of one quoted cell). Column names are
 * matched without regard to case. A row without an image path is reported as 'bad-manifest-entry' with its line.
 *
 * Parsed by csv-parse (RFC 4180: quoted fields hold commas, doubled quotes and line breaks; rows end in LF or CRLF;
 * a quote inside an unquoted field is kept as text). A file it cannot parse (a quote never closed, text after a
 * closing quote), and a row with more or fewer fields than the header (an unquoted comma in a caption would otherwise
 * cut the caption), stop with a DataError naming the file and line: nothing is dropped silently.
 */
import * as path from 'node:path';
import { CsvError, parse } from 'csv-parse';
import { readTextFileSync, TEXT_LIMITS } from '../../io/text-file';
import { DataError } from '../errors';
import { SkipReport } from '../skips';
import { captionsFrom, ManifestEntry, manifestRecords } from './manifest';
import { DataSource, SourceOptions } from './types';

const IMAGE_COLUMNS = ['image', 'path', 'file', 'filename'];
const CAPTION_COLUMNS = ['caption', 'captions', 'text'];

export interface CsvRow {
  /** 1-based line on which the row starts (a quoted field can span lines). */
  readonly line: number;
  readonly fields: string[];
}

export async function openCsvSource(manifest: string, options: SourceOptions = {}): Promise<DataSource> {
  const name = path.basename(manifest);
  const [header, ...body] = await parseCsvRows(readTextFileSync(manifest, TEXT_LIMITS.manifest), manifest);
  const columns = (header?.fields ?? []).map((column) => column.trim().toLowerCase());
  const imageColumn = columns.findIndex((column) => IMAGE_COLUMNS.includes(column));
  if (imageColumn < 0) {
    throw new DataError(
      `${manifest}: the header row has no image column (found: ${columns.join(', ') || 'nothing'})`,
      `name the image column one of ${IMAGE_COLUMNS.join(', ')} in the first row, e.g. "image,caption"`,
    );
  }
  const captionColumn = columns.findIndex((column) => CAPTION_COLUMNS.includes(column));
  const wrongWidth = body.find((row) => row.fields.length !== columns.length);
  if (wrongWidth !== undefined) {
    throw new DataError(
      `${manifest}:${wrongWidth.line}: the row has ${wrongWidth.fields.length} fields, the header has ${columns.length} (${columns.join(', ')})`,
      'quote a field that holds a comma ("red, round"), and give every row as many fields as the header (an empty one is two commas)',
    );
  }

  const entries: ManifestEntry[] = body.map(({ line, fields }) => {
    const where = `${name}:${line}`;
    const image = fields[imageColumn].trim();
    if (image === '') return { where, problem: `no image path in column "${columns[imageColumn]}"` };
    return { where, image, captions: captionColumn < 0 ? [] : (captionsFrom(fields[captionColumn]) ?? []) };
  });
  const skipped = new SkipReport();
  const records = await manifestRecords(manifest, entries, skipped, options);
  return { kind: 'csv', path: manifest, records, skipped };
}

/**
 * The rows of CSV `text` with the line each starts on; blank (or all-space) lines are passed over. A syntax error
 * is a DataError naming `file` and the line.
 */
export function parseCsvRows(text: string, file: string): Promise<CsvRow[]> {
  return new Promise((resolve, reject) => {
    const rows: CsvRow[] = [];
    let lastLine = 0; // the last line of the last complete row
    const parser = parse(text, { info: true, bom: true, relax_quotes: true, relax_column_count: true, skip_empty_lines: true, record_delimiter: ['\r\n', '\n'] });
    parser.on('data', ({ record, info }: { record: string[]; info: { lines: number } }) => {
      lastLine = info.lines;
      if (record.length === 1 && record[0].trim() === '') return; // a line of spaces: blank
      // info.lines is the row's last line: step back over the line breaks inside its quoted fields
      const breaks = record.reduce((sum, field) => sum + countLineBreaks(field), 0);
      rows.push({ line: info.lines - breaks, fields: record });
    });
    parser.on('error', (error: Error) => {
      const code = (error as CsvError).code;
      // csv-parse names the line where it noticed; for an unclosed quote that is the end of the file, so name the
      // first line after the last complete row, where the quoted field opens
      const line = code === 'CSV_QUOTE_NOT_CLOSED' ? firstNonBlankLineAfter(text, lastLine) : (error as CsvError & { lines?: number }).lines;
      const problem = code === 'CSV_QUOTE_NOT_CLOSED' ? 'a quoted field opened in this row is never closed' : error.message;
      reject(new DataError(`${file}${line === undefined ? '' : `:${line}`}: not CSV: ${problem}`, 'fix the CSV there: a quoted field ends with a quote followed by a comma or the end of the line, and a quote inside it is doubled ("")'));
    });
    parser.on('end', () => resolve(rows));
  });
}

function countLineBreaks(field: string): number {
  let count = 0;
  for (let at = field.indexOf('\n'); at >= 0; at = field.indexOf('\n', at + 1)) count++;
  return count;
}

/** 1-based number of the first line after line `after` that holds more than spaces. */
function firstNonBlankLineAfter(text: string, after: number): number {
  let start = 0;
  for (let line = 1; start <= text.length; line++) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (line > after && text.slice(start, end).trim() !== '') return line;
    start = end + 1;
  }
  return after + 1;
}
