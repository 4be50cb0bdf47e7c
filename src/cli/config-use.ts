/**
 * Which config keys a command reads. Every command declares it (`static configUse`), so that a --set, or a runtime
 * flag typed on the command line, that the command would not read is refused (exit 3) instead of having no effect:
 * `dalle generate --set model.n_layers=2` would otherwise run the prior of the --prior run unchanged.
 */
import { ConfigError, configSchemas, Override } from '../core/config';
import { fieldPaths } from '../core/config/schema';

export interface ConfigUse {
  /** Dotted paths of the fields read, or of whole sections ('train': every train.* key); empty: no config at all. */
  readonly keys: readonly string[];
  /** Where the command takes the other settings from, for the error, e.g. "the model comes from the --prior run". */
  readonly note?: string;
}

/** A command that reads no config: --config and --set are refused. */
export const NO_CONFIG: ConfigUse = { keys: [] };

/** What applyRuntime reads: every command that runs the engine reads these two. */
export const ENGINE_KEYS = ['runtime.threads', 'runtime.device'] as const;

/** What the command line asked of the config, each override labelled with its argument. */
export interface ConfigRequest {
  /** --config FILE, when given. */
  readonly file?: string;
  /** --set arguments, and the runtime flags typed on the command line (not those from the environment). */
  readonly overrides: readonly Override[];
}

/** Whether `keyPath` is one of `use.keys` or lies in one of its sections. */
export function readsKey(use: ConfigUse, keyPath: string): boolean {
  return use.keys.some((key) => keyPath === key || keyPath.startsWith(`${key}.`));
}

/** Every field of every config kind ('runtime.seed', 'train.lr', ...). */
const KNOWN_KEYS = new Set(
  Object.values(configSchemas).flatMap((schema) => fieldPaths(schema.sections).map((path) => path.join('.'))),
);

/**
 * Throws a ConfigError for the first thing `command` (e.g. "dalle generate") would silently ignore: --config or any
 * --set when it reads no config; a --set or runtime flag on a known key outside its keys. A key of no config at all is
 * left to the resolver, which reports it as unknown with the likeliest spelling.
 */
export function checkConfigUse(command: string, use: ConfigUse, request: ConfigRequest): void {
  const reason = use.note === undefined ? '' : ` (${use.note})`;
  if (use.keys.length === 0) {
    const first = request.file !== undefined ? `--config ${request.file}` : request.overrides[0]?.argument;
    if (first === undefined) return;
    throw new ConfigError(`\`${command}\` reads no config, so this would change nothing${reason}`, {
      argument: first,
      hint: `leave out ${request.file !== undefined ? '--config' : first.split(' ')[0]}`,
    });
  }
  for (const override of request.overrides) {
    if (readsKey(use, override.keyPath) || !KNOWN_KEYS.has(override.keyPath)) continue;
    throw new ConfigError(`\`${command}\` does not read this key, so it would change nothing${reason}`, {
      argument: override.argument,
      keyPath: override.keyPath,
      hint: `\`${command}\` reads only ${use.keys.map((key) => (KNOWN_KEYS.has(key) ? key : `${key}.*`)).join(', ')}`,
    });
  }
}

/** Every key of every config kind (`dalle config` resolves whichever kind it is given). */
export const EVERY_KEY: ConfigUse = {
  keys: [...new Set(Object.values(configSchemas).flatMap((schema) => Object.keys(schema.sections)))],
};
