/**
 * Command-line overrides: `--set train.lr=3e-4`, and the dedicated flags (`--seed 7`) that the CLI turns into the same
 * thing. Each keeps the argument it came from, so an error can name it.
 */
import { ConfigError } from './errors';

export interface Override {
  /** Dotted key path, e.g. `train.lr`. */
  readonly keyPath: string;
  /** The value as typed; the field's type decides how it is read. */
  readonly text: string;
  /** The argument to name in errors, e.g. `--set train.lr=3e-4`. */
  readonly argument: string;
}

/** Parses the value of one `--set` flag: `key.path=value` (the value may itself contain `=`). */
export function parseSetArgument(arg: string): Override {
  const argument = `--set ${arg}`;
  const equals = arg.indexOf('=');
  const keyPath = equals < 0 ? '' : arg.slice(0, equals).trim();
  if (keyPath === '') {
    throw new ConfigError('expected KEY=VALUE', {
      argument,
      hint: 'write the dotted key, "=", then the value, e.g. --set train.lr=3e-4 (run `dalle config` to list the keys)',
    });
  }
  return { keyPath, text: arg.slice(equals + 1), argument };
}

/** Accepts raw `--set` strings and ready-made overrides alike. */
export function toOverride(set: string | Override): Override {
  return typeof set === 'string' ? parseSetArgument(set) : set;
}
