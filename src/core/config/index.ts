/**
 * Typed configs: defaults in code (src/core/config/schemas), YAML files that only override them, `--set key.path=value`
 * overrides, strict validation with file:line errors. See README.md "Configs".
 */
export { ConfigError, ConfigErrorDetails, ConfigLocation, describeLocation } from './errors';
export {
  bool,
  describeExpected,
  Field,
  FieldOptions,
  FieldType,
  int,
  integerList,
  num,
  numberList,
  odd,
  oneOf,
  str,
  stringList,
} from './fields';
export { formatConfigYaml, FormatOptions } from './format';
export { AnyConfig, AnySchema, isConfigKind, resolveAnyConfig, ResolveAnyOptions, ResolvedAny } from './kinds';
export { levenshtein, closestMatch } from './levenshtein';
export { Override, parseSetArgument } from './overrides';
export { resolveConfig, resolveConfigWithSources, ResolveOptions, ResolvedWithSources } from './resolve';
export { readRunConfig, RUN_CONFIG_FILE, writeRunConfig } from './run-dir';
export { ConfigOf, ConfigSchema, defineConfig, KIND_KEY, Resolved, Rule, Section } from './schema';
export * from './schemas';
export { ConfigFile, readConfigFile } from './yaml-file';
