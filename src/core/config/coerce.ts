/**
 * Checking one value against its field. YAML values arrive already typed (the YAML parser decides 3 vs "3");
 * command-line values arrive as text and are typed by the field ("3" -> 3 for a number field, "true" -> true for a
 * boolean field, "3" stays "3" for a string field).
 */
import YAML from 'yaml';
import { describeExpected, Field, ItemType } from './fields';
import { closestMatch } from './levenshtein';

export type Checked = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly problem: string };

/** Checks a value that came from YAML. */
export function checkYamlValue(field: Field<unknown>, value: unknown): Checked {
  if (value === null) return checkNull(field);
  if (field.type === 'list') {
    if (!Array.isArray(value)) return mismatch(field, value);
    return checkList(field, value, (item) => item);
  }
  return andCustom(field, checkScalar(field, field.type, value));
}

/** Checks a value written as text on the command line (`--set key=TEXT`, `--seed 7`). */
export function checkTextValue(field: Field<unknown>, text: string): Checked {
  if (text === 'null') return checkNull(field);
  if (field.type === 'list') {
    return checkList(field, splitListText(text), (item) => fromText(field.item ?? 'string', String(item)));
  }
  return andCustom(field, checkScalar(field, field.type, fromText(field.type, text)));
}

function checkNull(field: Field<unknown>): Checked {
  return field.nullable ? { ok: true, value: null } : mismatch(field, null);
}

function checkList(field: Field<unknown>, items: readonly unknown[], convert: (item: unknown) => unknown): Checked {
  const values: unknown[] = [];
  for (const [index, item] of items.entries()) {
    const checked = checkScalar(field, field.item ?? 'string', convert(item));
    if (!checked.ok) return { ok: false, problem: `item ${index}: ${checked.problem}` };
    values.push(checked.value);
  }
  return andCustom(field, { ok: true, value: Object.freeze(values) });
}

function checkScalar(
  field: Field<unknown>,
  type: Exclude<Field<unknown>['type'], 'list'> | ItemType,
  value: unknown,
): Checked {
  switch (type) {
    case 'number':
    case 'integer': {
      if (typeof value !== 'number' || !Number.isFinite(value)) return mismatch(field, value);
      if (type === 'integer' && !Number.isInteger(value)) return mismatch(field, value);
      const { min, max, greaterThan, lessThan } = field;
      const outOfRange =
        (min !== undefined && value < min) ||
        (max !== undefined && value > max) ||
        (greaterThan !== undefined && value <= greaterThan) ||
        (lessThan !== undefined && value >= lessThan);
      return outOfRange ? mismatch(field, value) : { ok: true, value };
    }
    case 'boolean':
      return typeof value === 'boolean' ? { ok: true, value } : mismatch(field, value);
    case 'string':
      if (typeof value === 'string') return { ok: true, value };
      // A number or boolean where a string belongs is almost always an unquoted YAML scalar.
      if (typeof value === 'number' || typeof value === 'boolean') {
        return { ok: false, problem: `expected a string, got ${show(value)}; quote it: "${String(value)}"` };
      }
      return mismatch(field, value);
    case 'enum': {
      const choices = field.choices ?? [];
      if (typeof value === 'string' && choices.includes(value)) return { ok: true, value };
      const guess = typeof value === 'string' ? closestMatch(value, choices) : undefined;
      const problem = `expected ${describeExpected(field)}, got ${show(value)}`;
      return { ok: false, problem: guess === undefined ? problem : `${problem}; did you mean "${guess}"?` };
    }
  }
}

/** Applies the field's own `check` (odd, power of two, ...) to a value that passed the type and bound checks. */
function andCustom(field: Field<unknown>, checked: Checked): Checked {
  if (!checked.ok || field.check === undefined) return checked;
  const problem = field.check(checked.value as never);
  return problem === undefined ? checked : { ok: false, problem };
}

function mismatch(field: Field<unknown>, value: unknown): Checked {
  return { ok: false, problem: `expected ${describeExpected(field)}, got ${show(value)}` };
}

// Decimal numbers only: Number() alone would also accept "", "0x10" and "Infinity".
const DECIMAL = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function fromText(type: Field<unknown>['type'], text: string): unknown {
  const trimmed = text.trim();
  if (type === 'number' || type === 'integer') return DECIMAL.test(trimmed) ? Number(trimmed) : text;
  if (type === 'boolean') return trimmed === 'true' ? true : trimmed === 'false' ? false : text;
  return text;
}

/** `[1, 2, 3]` (YAML flow sequence), `1,2,3`, or `` (empty list). */
function splitListText(text: string): readonly unknown[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  if (trimmed.startsWith('[')) {
    const parsed: unknown = YAML.parse(trimmed);
    if (Array.isArray(parsed)) return parsed.map((item) => (typeof item === 'string' ? item : String(item)));
  }
  return trimmed.split(',').map((item) => item.trim());
}

/** A value as the user would recognise it in an error message. */
export function show(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `a list ${JSON.stringify(value)}`;
  if (typeof value === 'object') return 'a mapping';
  return String(value);
}
