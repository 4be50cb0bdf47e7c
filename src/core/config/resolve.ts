/**
 * Resolving a config: the schema's defaults, then the YAML file, then the command-line overrides in order (the last
 * one wins), then the cross-field rules. The result is a deeply frozen, fully typed object.
 */
import YAML, { Node as YamlNode, Scalar } from 'yaml';
import { checkTextValue, checkYamlValue } from './coerce';
import { ConfigError, ConfigLocation } from './errors';
import { Field } from './fields';
import { closestMatch } from './levenshtein';
import { Override, toOverride } from './overrides';
import { ConfigOf, ConfigSchema, fieldPaths, isField, KIND_KEY, lookup, Section } from './schema';
import { ConfigFile, readConfigFile } from './yaml-file';

export interface ResolveOptions {
  /** YAML file of overrides (a path, or a file already read with readConfigFile). */
  readonly file?: string | ConfigFile;
  /** `key.path=value` strings (as given to --set) or overrides from flags, applied in order after the file. */
  readonly sets?: readonly (string | Override)[];
}

export interface ResolvedWithSources<C extends ConfigSchema> {
  readonly config: ConfigOf<C>;
  /** Where each value that is not its default came from, by dotted key path. */
  readonly sources: ReadonlyMap<string, ConfigLocation>;
}

/** Defaults, then the file, then the overrides; throws ConfigError naming the file, line and key of any problem. */
export function resolveConfig<C extends ConfigSchema>(schema: C, options: ResolveOptions = {}): ConfigOf<C> {
  return resolveConfigWithSources(schema, options).config;
}

/** resolveConfig, also reporting where every non-default value came from (shown by `dalle config`). */
export function resolveConfigWithSources<C extends ConfigSchema>(
  schema: C,
  options: ResolveOptions = {},
): ResolvedWithSources<C> {
  const values = defaultsOf(schema.sections);
  const sources = new Map<string, ConfigLocation>();
  if (options.file !== undefined) {
    const file = typeof options.file === 'string' ? readConfigFile(options.file) : options.file;
    checkKind(schema, file);
    if (file.root !== null) applyYamlMap(file, file.root, schema.sections, [], values, sources, schema.sections);
  }
  for (const set of options.sets ?? []) applyOverride(toOverride(set), schema.sections, values, sources);

  const config = deepFreeze({ kind: schema.kind, ...values }) as ConfigOf<C>;
  for (const rule of schema.rules) {
    const problem = rule.check(config);
    if (problem === undefined) continue;
    const involved = [rule.keyPath, ...(rule.related ?? [])];
    const locatedAt = involved.find((keyPath) => sources.has(keyPath));
    throw new ConfigError(problem, {
      ...(locatedAt === undefined ? {} : sources.get(locatedAt)),
      keyPath: rule.keyPath,
      hint: `change ${involved.join(' or ')}, in the file or with --set`,
    });
  }
  return { config, sources };
}

type ValueTree = { [key: string]: unknown };

function defaultsOf(section: Section): ValueTree {
  const tree: ValueTree = {};
  for (const [key, node] of Object.entries(section)) tree[key] = isField(node) ? node.default : defaultsOf(node);
  return tree;
}

function checkKind(schema: ConfigSchema, file: ConfigFile): void {
  if (file.kind === undefined) {
    throw new ConfigError('missing; every config file says which config it is', {
      ...file.kindLocation,
      keyPath: KIND_KEY,
      hint: `add the line "kind: ${schema.kind}" at the top of ${file.path}`,
    });
  }
  if (file.kind !== schema.kind) {
    throw new ConfigError(`this is a "${file.kind}" config, but a "${schema.kind}" config is needed here`, {
      ...file.kindLocation,
      keyPath: KIND_KEY,
      hint: `pass a config file that starts with "kind: ${schema.kind}" (configs/${schema.kind}-*.yaml)`,
    });
  }
}

function applyYamlMap(
  file: ConfigFile,
  map: YAML.YAMLMap,
  section: Section,
  path: readonly string[],
  values: ValueTree,
  sources: Map<string, ConfigLocation>,
  root: Section,
): void {
  for (const pair of map.items) {
    const keyNode = pair.key as YamlNode | null;
    const key = keyNode instanceof Scalar ? String(keyNode.value) : undefined;
    if (key === undefined) {
      throw new ConfigError('keys must be plain names', {
        ...file.locate(keyNode),
        keyPath: path.join('.') || undefined,
      });
    }
    if (path.length === 0 && key === KIND_KEY) continue; // checked by checkKind
    const keyPath = [...path, key];
    const node = Object.hasOwn(section, key) ? section[key] : undefined;
    if (node === undefined) throw unknownKey(root, keyPath, file.locate(keyNode));

    const valueNode = resolveAlias(file, pair.value as YamlNode | null);
    if (isField(node)) {
      const location = file.locate(valueNode ?? keyNode);
      const value = valueNode === null ? null : (valueNode.toJS(file.document) as unknown);
      const checked = checkYamlValue(node, value);
      if (!checked.ok) throw fieldError(node, checked.problem, keyPath, location);
      setAt(values, keyPath, checked.value);
      sources.set(keyPath.join('.'), location);
    } else if (YAML.isMap(valueNode)) {
      applyYamlMap(file, valueNode, node, keyPath, values, sources, root);
    } else if (!isEmpty(valueNode)) {
      throw new ConfigError(`expected a section (indented keys under "${key}:")`, {
        ...file.locate(valueNode),
        keyPath: keyPath.join('.'),
        hint: `its keys are: ${Object.keys(node).join(', ')}`,
      });
    }
  }
}

function resolveAlias(file: ConfigFile, node: YamlNode | null): YamlNode | null {
  if (node !== null && YAML.isAlias(node)) return (node.resolve(file.document) as YamlNode | undefined) ?? null;
  return node;
}

// `train:` with nothing under it overrides nothing.
function isEmpty(node: YamlNode | null): boolean {
  return node === null || (node instanceof Scalar && node.value === null);
}

function applyOverride(
  override: Override,
  root: Section,
  values: ValueTree,
  sources: Map<string, ConfigLocation>,
): void {
  const keyPath = override.keyPath.split('.');
  const location: ConfigLocation = { argument: override.argument };
  if (override.keyPath === KIND_KEY) {
    throw new ConfigError('the kind of a config cannot be changed with --set', {
      ...location,
      keyPath: KIND_KEY,
      hint: 'pass a config file of the kind you want with --config',
    });
  }
  const node = lookup(root, keyPath);
  if (node === undefined) throw unknownKey(root, keyPath, location);
  if (!isField(node)) {
    const example = [...keyPath, Object.keys(node)[0]].join('.');
    throw new ConfigError('is a section, not a value', {
      ...location,
      keyPath: override.keyPath,
      hint: `set one of its keys, e.g. --set ${example}=...`,
    });
  }
  const checked = checkTextValue(node, override.text);
  if (!checked.ok) throw fieldError(node, checked.problem, keyPath, location);
  setAt(values, keyPath, checked.value);
  sources.set(override.keyPath, location);
}

function fieldError(field: Field<unknown>, problem: string, keyPath: readonly string[], location: ConfigLocation) {
  return new ConfigError(problem, {
    ...location,
    keyPath: keyPath.join('.'),
    hint: `${keyPath.join('.')}: ${field.doc} (default: ${JSON.stringify(field.default)})`,
  });
}

/** An unknown key, with the likeliest intended key: the same name in another section, else the closest spelling. */
function unknownKey(root: Section, keyPath: readonly string[], location: ConfigLocation): ConfigError {
  // The longest prefix that exists: "train.lrr" -> train; "modle.n_hid" -> the top level.
  let known = 0;
  while (known < keyPath.length - 1 && lookup(root, keyPath.slice(0, known + 1)) !== undefined) known++;
  const parentPath = keyPath.slice(0, known);
  const parent = lookup(root, parentPath);
  const key = keyPath[known];
  const siblings = parent !== undefined && !isField(parent) ? Object.keys(parent) : [];

  // An exact name in the wrong section ("train.n_hid" for "model.n_hid") is a surer guess than a near spelling.
  const leaf = keyPath[keyPath.length - 1];
  const elsewhere = fieldPaths(root)
    .find((path) => path[path.length - 1] === leaf)
    ?.join('.');
  const sibling = closestMatch(key, siblings);
  const respelled = sibling === undefined ? undefined : [...parentPath, sibling, ...keyPath.slice(known + 1)].join('.');
  const guess = elsewhere ?? respelled;
  const sectionName = parentPath.length === 0 ? 'the top level' : parentPath.join('.');
  const problem = guess !== undefined ? `unknown key; did you mean "${guess}"?` : `unknown key`;
  return new ConfigError(problem, {
    ...location,
    keyPath: keyPath.slice(0, known + 1).join('.'),
    hint: `the keys of ${sectionName} are: ${siblings.join(', ')} (run \`dalle config\` to see them all)`,
  });
}

function setAt(tree: ValueTree, keyPath: readonly string[], value: unknown): void {
  let node = tree;
  for (const key of keyPath.slice(0, -1)) node = node[key] as ValueTree;
  node[keyPath[keyPath.length - 1]] = value;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
