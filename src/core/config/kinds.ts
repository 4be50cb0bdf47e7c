/**
 * Resolving a config whose kind is not known in advance (`dalle config --config FILE`): the file's `kind:` line picks
 * the schema. Commands that need one kind call resolveConfig with that kind's schema instead.
 */
import { ConfigError, ConfigLocation } from './errors';
import { closestMatch } from './levenshtein';
import { Override } from './overrides';
import { resolveConfigWithSources } from './resolve';
import { ConfigOf, KIND_KEY } from './schema';
import { CONFIG_KINDS, ConfigKind, configSchemas } from './schemas';
import { readConfigFile } from './yaml-file';

/** Any resolved config; `kind` tells which. */
export type AnyConfig = { [K in ConfigKind]: ConfigOf<(typeof configSchemas)[K]> }[ConfigKind];
export type AnySchema = (typeof configSchemas)[ConfigKind];

export interface ResolveAnyOptions {
  /** YAML file; its `kind:` line picks the schema. */
  readonly file?: string;
  /** The kind to use without a file, or to require of the file. */
  readonly kind?: ConfigKind;
  readonly sets?: readonly (string | Override)[];
}

export interface ResolvedAny {
  readonly schema: AnySchema;
  readonly config: AnyConfig;
  readonly sources: ReadonlyMap<string, ConfigLocation>;
}

export function isConfigKind(name: string): name is ConfigKind {
  return Object.hasOwn(configSchemas, name);
}

export function resolveAnyConfig(options: ResolveAnyOptions): ResolvedAny {
  const file = options.file === undefined ? undefined : readConfigFile(options.file);
  const kind = options.kind ?? file?.kind;
  if (kind === undefined) {
    throw new ConfigError(
      file === undefined ? 'no config given' : 'missing; every config file says which config it is',
      {
        ...file?.kindLocation,
        keyPath: file === undefined ? undefined : KIND_KEY,
        hint:
          file === undefined
            ? `pass --config FILE, or --kind ${CONFIG_KINDS.join('|')} to see the defaults`
            : `add a first line "kind: ${CONFIG_KINDS.join('" or "kind: ')}"`,
      },
    );
  }
  if (!isConfigKind(kind)) {
    const guess = closestMatch(kind, CONFIG_KINDS);
    throw new ConfigError(`unknown kind "${kind}"${guess === undefined ? '' : `; did you mean "${guess}"?`}`, {
      ...file?.kindLocation,
      keyPath: KIND_KEY,
      hint: `the kinds are: ${CONFIG_KINDS.join(', ')}`,
    });
  }
  // A file of another kind than the one asked for is reported by resolveConfigWithSources, at the file's kind line.
  const schema: AnySchema = configSchemas[kind];
  const { config, sources } = resolveConfigWithSources(schema, { file, sets: options.sets });
  return { schema, config: config as AnyConfig, sources };
}
