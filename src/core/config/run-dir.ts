/**
 * The resolved config of a run lives in `runs/NAME/config.yaml`. It is written atomically (a temporary file in the same
 * directory, flushed, then renamed over the old one), so a crash never leaves a half-written config behind.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic';
import { formatConfigYaml } from './format';
import { resolveConfig } from './resolve';
import { ConfigOf, ConfigSchema } from './schema';

export const RUN_CONFIG_FILE = 'config.yaml';

/** Writes `config` to `runDir/config.yaml` (creating runDir), returns the file's path. */
export function writeRunConfig<C extends ConfigSchema>(runDir: string, schema: C, config: ConfigOf<C>): string {
  fs.mkdirSync(runDir, { recursive: true });
  const target = path.join(runDir, RUN_CONFIG_FILE);
  writeFileAtomicSync(target, formatConfigYaml(schema, config));
  return target;
}

/** Reads a run's config back (resuming takes the architecture from the run, not from the command line). */
export function readRunConfig<C extends ConfigSchema>(runDir: string, schema: C): ConfigOf<C> {
  return resolveConfig(schema, { file: path.join(runDir, RUN_CONFIG_FILE) });
}
