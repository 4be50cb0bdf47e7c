/**
 * The resolved config of a run lives in `runs/NAME/config.yaml`. It is written atomically (a temporary file in the same
 * directory, flushed, then renamed over the old one), so a crash never leaves a half-written config behind.
 */
import fs from 'node:fs';
import path from 'node:path';
import { formatConfigYaml } from './format';
import { resolveConfig } from './resolve';
import { ConfigOf, ConfigSchema } from './schema';

export const RUN_CONFIG_FILE = 'config.yaml';

/** Writes `config` to `runDir/config.yaml` (creating runDir), returns the file's path. */
export function writeRunConfig<C extends ConfigSchema>(runDir: string, schema: C, config: ConfigOf<C>): string {
  fs.mkdirSync(runDir, { recursive: true });
  const target = path.join(runDir, RUN_CONFIG_FILE);
  writeFileAtomic(target, formatConfigYaml(schema, config));
  return target;
}

/** Reads a run's config back (resuming takes the architecture from the run, not from the command line). */
export function readRunConfig<C extends ConfigSchema>(runDir: string, schema: C): ConfigOf<C> {
  return resolveConfig(schema, { file: path.join(runDir, RUN_CONFIG_FILE) });
}

/** Temp file + fsync + rename: readers see the old file or the new one, never a mix. */
export function writeFileAtomic(target: string, text: string): void {
  const temporary = `${target}.${process.pid}.${Date.now().toString(36)}.tmp`;
  try {
    const fd = fs.openSync(temporary, 'w');
    try {
      fs.writeFileSync(fd, text);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temporary, target);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  }
}
