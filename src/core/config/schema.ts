/**
 * Config schemas: a tree whose inner nodes are sections (plain objects) and whose leaves are fields. The resolved
 * config has the same shape with every field replaced by its value, and its TypeScript type is derived from the schema,
 * so adding a field to a schema is one line and the config type follows.
 */
import { Field } from './fields';

/** A section of a schema: keys to fields or nested sections. */
export interface Section {
  // `any`: a Field<number> must fit here, and Field<T> is not covariant in T (its `check` takes a T).
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly [key: string]: Field<any> | Section;
}

/** The resolved value of a section: the same keys, each field replaced by its value. */
export type Resolved<S extends Section> = {
  readonly [K in keyof S]: S[K] extends Field<infer T> ? T : S[K] extends Section ? Resolved<S[K]> : never;
};

/**
 * A rule across fields (`train.lr_min <= train.lr`). It is reported at `keyPath`, located where that value was set, or
 * else where the first of `related` was set (the value that made a default wrong).
 */
export interface Rule<C> {
  readonly keyPath: string;
  readonly related?: readonly string[];
  /** Returns the problem, or undefined when the config satisfies the rule. */
  readonly check: (config: C) => string | undefined;
}

/** A whole config: its kind (the `kind:` line of its YAML files), a doc line, its sections and cross-field rules. */
export interface ConfigSchema<K extends string = string, S extends Section = Section> {
  readonly kind: K;
  readonly doc: string;
  readonly sections: S;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly rules: readonly Rule<any>[];
}

/** The resolved config of a schema: `{ kind, ...sections }`, deeply read-only. */
export type ConfigOf<C extends ConfigSchema> = { readonly kind: C['kind'] } & Resolved<C['sections']>;

/** The key of the top-level line that says which schema a YAML file is for. */
export const KIND_KEY = 'kind';

export function defineConfig<const K extends string, const S extends Section>(
  kind: K,
  doc: string,
  sections: S,
  rules: readonly Rule<{ readonly kind: K } & Resolved<S>>[] = [],
): ConfigSchema<K, S> {
  if (KIND_KEY in sections) throw new Error(`config "${kind}": "${KIND_KEY}" is reserved for the config's kind`);
  return { kind, doc, sections, rules };
}

export function isField(node: Field<unknown> | Section): node is Field<unknown> {
  return node instanceof Field;
}

/** The field or section at a dotted path, or undefined. */
export function lookup(section: Section, keyPath: readonly string[]): Field<unknown> | Section | undefined {
  let node: Field<unknown> | Section = section;
  for (const key of keyPath) {
    if (isField(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

/** Every field's dotted path, in declaration order. */
export function fieldPaths(section: Section, prefix: readonly string[] = []): string[][] {
  const paths: string[][] = [];
  for (const [key, node] of Object.entries(section)) {
    const path = [...prefix, key];
    if (isField(node)) paths.push(path);
    else paths.push(...fieldPaths(node, path));
  }
  return paths;
}
