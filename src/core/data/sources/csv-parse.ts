/**
 * A small RFC 4180 CSV reader: comma-separated fields; a field in double quotes may hold commas, line breaks and
 * doubled quotes (""); rows end in LF or CRLF. Lenient where files in the wild are sloppy (a quote inside an
 * unquoted field is kept as text; text after a closing quote is appended). The one fatal problem, a quote that is
 * never closed, ends the file: the rows before it are returned with `error` naming its line.
 *
 * Our own rather than a library: manifests need two columns, the format is small, and every row must keep the line
 * it started on so that a bad row is reported (and skipped) by line, which is most of the code either way.
 */

export interface CsvRow {
  /** 1-based line on which the row starts (a quoted field can span lines). */
  readonly line: number;
  readonly fields: string[];
}

export interface CsvParse {
  readonly rows: CsvRow[];
  /** An unterminated quoted field: the line of the row it started in. */
  readonly error?: { readonly line: number; readonly message: string };
}

export function parseCsv(text: string): CsvParse {
  const rows: CsvRow[] = [];
  const source = text.replace(/^\uFEFF/, '');
  let fields: string[] = [];
  let field = '';
  let line = 1;
  let rowLine = 1;
  let quoted = false; // inside a quoted field
  let fieldStarted = false; // the row has content (so a trailing empty line is not a row)
  for (let i = 0; i < source.length; i++) {
    const ch = source[i];
    if (quoted) {
      if (ch === '"') {
        if (source[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
      continue;
    }
    if (ch === '"' && field === '') {
      quoted = true;
      fieldStarted = true;
    } else if (ch === ',') {
      fields.push(field);
      field = '';
      fieldStarted = true;
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && source[i + 1] === '\n') i++;
      if (fieldStarted || field !== '') rows.push({ line: rowLine, fields: [...fields, field] });
      fields = [];
      field = '';
      fieldStarted = false;
      line++;
      rowLine = line;
    } else {
      field += ch;
      fieldStarted = true;
    }
  }
  if (quoted) return { rows, error: { line: rowLine, message: 'a quoted field is never closed' } };
  if (fieldStarted || field !== '') rows.push({ line: rowLine, fields: [...fields, field] });
  return { rows };
}
