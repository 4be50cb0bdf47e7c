/**
 * Reading the variables that job schedulers and launchers set (Slurm, Kubernetes Indexed Jobs, torchrun, dalle launch),
 * strictly: a number is digits only, within safe integers, and a problem names the variable and its (shortened) value.
 * Shared by generate's `--shard auto` (sample/plan.ts) and data-parallel training (distributed/launch-env.ts); each
 * turns the problem into its own named error through `fail`.
 */

/** The index of a pod of a Kubernetes Indexed Job (completionMode: Indexed), 0 .. spec.completions - 1. */
export const KUBERNETES_INDEX_VAR = 'JOB_COMPLETION_INDEX';

/** Longest value quoted back in a message: a variable can hold megabytes. */
const QUOTE_CHARS = 40;

/** `"value"` for a message, cut to QUOTE_CHARS characters. */
export function quoteEnvValue(text: string): string {
  return JSON.stringify(text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}...` : text);
}

/** A variable's text, trimmed; undefined when it is unset or blank (`export X=` means "not set"). */
export function envText(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const text = env[name]?.trim();
  return text === undefined || text === '' ? undefined : text;
}

/**
 * A non-negative integer variable; undefined when it is unset or blank. `fail` makes the caller's error from the
 * problem ("SLURM_PROCID=\"x\" is not a non-negative integer").
 */
export function envNonNegativeInt(env: NodeJS.ProcessEnv, name: string, fail: (problem: string) => Error): number | undefined {
  const raw = env[name];
  const text = envText(env, name);
  if (raw === undefined || text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw fail(`${name}=${quoteEnvValue(raw)} is not a non-negative integer`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw fail(`${name}=${quoteEnvValue(raw)} is too large`);
  return value;
}
