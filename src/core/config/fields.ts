/**
 * Config fields: the leaves of a config schema. Each field has a type, a default, a one-line doc (why this default),
 * and optional bounds, choices or a custom check. Declaring one is one line:
 *
 *   lr: num(1e-4, 'peak AdamW step size (paper A.2: 1e-4)', { min: 0 }),
 *
 * A field whose default is `null` is nullable ("not set"): YAML `null` and `--set key=null` are then accepted.
 */

export type FieldType = 'number' | 'integer' | 'string' | 'boolean' | 'enum' | 'list';
/** What a list field holds. */
export type ItemType = 'number' | 'integer' | 'string';

export interface Bounds {
  /** Smallest allowed value (inclusive). */
  readonly min?: number;
  /** Largest allowed value (inclusive). */
  readonly max?: number;
  /** Values must be strictly greater than this (a step size or a temperature that must not reach 0). */
  readonly greaterThan?: number;
  /** Values must be strictly less than this (an Adam beta must stay below 1). */
  readonly lessThan?: number;
}

export interface FieldOptions<T> extends Bounds {
  /** Extra rule on a value that already has the right type and bounds; returns the problem, or undefined when fine. */
  readonly check?: (value: NonNullable<T>) => string | undefined;
}

interface FieldSpec<T> extends FieldOptions<T> {
  readonly type: FieldType;
  readonly default: T;
  readonly doc: string;
  readonly choices?: readonly string[];
  readonly item?: ItemType;
}

/** A leaf of a schema; `T` is the type of its resolved value. */
export class Field<T> {
  readonly type: FieldType;
  readonly default: T;
  readonly doc: string;
  readonly min?: number;
  readonly max?: number;
  readonly greaterThan?: number;
  readonly lessThan?: number;
  readonly choices?: readonly string[];
  /** Element type of a list field. */
  readonly item?: ItemType;
  readonly check?: (value: NonNullable<T>) => string | undefined;
  /** A nullable field accepts `null` ("not set"); it is nullable exactly when its default is null. */
  readonly nullable: boolean;

  constructor(spec: FieldSpec<T>) {
    this.type = spec.type;
    this.default = spec.default;
    this.doc = spec.doc;
    this.min = spec.min;
    this.max = spec.max;
    this.greaterThan = spec.greaterThan;
    this.lessThan = spec.lessThan;
    this.choices = spec.choices;
    this.item = spec.item;
    this.check = spec.check;
    this.nullable = spec.default === null;
  }
}

export function num(value: number, doc: string, options?: FieldOptions<number>): Field<number>;
export function num(value: null, doc: string, options?: FieldOptions<number>): Field<number | null>;
export function num(
  value: number | null,
  doc: string,
  options: FieldOptions<number> = {},
): Field<number> | Field<number | null> {
  return new Field<number | null>({ ...options, type: 'number', default: value, doc });
}

export function int(value: number, doc: string, options?: FieldOptions<number>): Field<number>;
export function int(value: null, doc: string, options?: FieldOptions<number>): Field<number | null>;
export function int(
  value: number | null,
  doc: string,
  options: FieldOptions<number> = {},
): Field<number> | Field<number | null> {
  return new Field<number | null>({ ...options, type: 'integer', default: value, doc });
}

export function str(value: string, doc: string, options?: FieldOptions<string>): Field<string>;
export function str(value: null, doc: string, options?: FieldOptions<string>): Field<string | null>;
export function str(
  value: string | null,
  doc: string,
  options: FieldOptions<string> = {},
): Field<string> | Field<string | null> {
  return new Field<string | null>({ ...options, type: 'string', default: value, doc });
}

export function bool(value: boolean, doc: string): Field<boolean> {
  return new Field<boolean>({ type: 'boolean', default: value, doc });
}

/** One of a fixed set of strings; the resolved type is the union of the choices. */
export function oneOf<const C extends readonly string[]>(choices: C, value: C[number], doc: string): Field<C[number]> {
  return new Field<C[number]>({ type: 'enum', default: value, doc, choices });
}

export function numberList(value: readonly number[], doc: string, bounds: Bounds = {}): Field<readonly number[]> {
  return new Field<readonly number[]>({ ...bounds, type: 'list', item: 'number', default: value, doc });
}

export function integerList(value: readonly number[], doc: string, bounds: Bounds = {}): Field<readonly number[]> {
  return new Field<readonly number[]>({ ...bounds, type: 'list', item: 'integer', default: value, doc });
}

export function stringList(value: readonly string[], doc: string): Field<readonly string[]> {
  return new Field<readonly string[]>({ type: 'list', item: 'string', default: value, doc });
}

/** A `check` for odd integers (convolution kernels centred on their token). */
export function odd(value: number): string | undefined {
  return value % 2 === 1 ? undefined : `expected an odd integer, got ${value}`;
}

/** "a number >= 0", "an integer in [1, 64]", "one of cpu, cuda", ...: what a field accepts, for error messages. */
export function describeExpected(field: Field<unknown>): string {
  const base = (() => {
    switch (field.type) {
      case 'number':
        return `a number${describeBounds(field)}`;
      case 'integer':
        return `an integer${describeBounds(field)}`;
      case 'string':
        return 'a string';
      case 'boolean':
        return 'true or false';
      case 'enum':
        return `one of ${(field.choices ?? []).join(', ')}`;
      case 'list':
        return `a list of ${field.item === 'integer' ? 'integers' : `${field.item}s`}${describeBounds(field)}`;
    }
  })();
  return field.nullable ? `${base} or null` : base;
}

function describeBounds(bounds: Bounds): string {
  const { min, max, greaterThan, lessThan } = bounds;
  if (min !== undefined && max !== undefined) return ` in [${min}, ${max}]`;
  const lower = greaterThan !== undefined ? `> ${greaterThan}` : min !== undefined ? `>= ${min}` : undefined;
  const upper = lessThan !== undefined ? `< ${lessThan}` : max !== undefined ? `<= ${max}` : undefined;
  const parts = [lower, upper].filter((part) => part !== undefined);
  return parts.length > 0 ? ` ${parts.join(' and ')}` : '';
}
