/**
 * ConfigError: every problem with a config (a YAML file, a --set argument, a flag) is reported as one of these, naming
 * where the bad value came from (file:line:column or the --set argument), the key path, and what to do about it.
 */

/** Where a value came from; a ConfigError points at it. */
export interface ConfigLocation {
  /** YAML file the value was read from. */
  readonly file?: string;
  /** 1-based line in `file`. */
  readonly line?: number;
  /** 1-based column in `file`. */
  readonly column?: number;
  /** The command-line argument that carried the value, e.g. `--set train.lr=3e-4` or `--seed 7`. */
  readonly argument?: string;
}

export interface ConfigErrorDetails extends ConfigLocation {
  /** Dotted path of the offending key, e.g. `train.lr`. */
  readonly keyPath?: string;
  /** What to do next; the CLI shows it as a suggestion. */
  readonly hint?: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly argument?: string;
  readonly keyPath?: string;
  readonly hint?: string;
  /** The problem alone, without the location prefix. */
  readonly problem: string;

  constructor(problem: string, details: ConfigErrorDetails = {}) {
    super(formatConfigMessage(problem, details));
    this.problem = problem;
    this.file = details.file;
    this.line = details.line;
    this.column = details.column;
    this.argument = details.argument;
    this.keyPath = details.keyPath;
    this.hint = details.hint;
  }
}

/** `file:line:col` (as much of it as is known), or the argument, or nothing. */
export function describeLocation(location: ConfigLocation): string | undefined {
  if (location.file !== undefined) {
    let where = location.file;
    if (location.line !== undefined) where += `:${location.line}`;
    if (location.line !== undefined && location.column !== undefined) where += `:${location.column}`;
    return where;
  }
  return location.argument;
}

// `configs/x.yaml:7:3: train.lr: expected a number >= 0, got "fast"`: a compiler-style prefix editors can jump to.
function formatConfigMessage(problem: string, details: ConfigErrorDetails): string {
  const parts = [describeLocation(details), details.keyPath, problem].filter((part) => part !== undefined);
  return parts.join(': ');
}
