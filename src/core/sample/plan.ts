/**
 * What a generation job does: which (caption, sample) units, with which random stream, into which file.
 *
 * - A unit is (caption index i, sample index j), numbered u = i * samples + j.
 * - Its random stream is Philox(seed).fork(i).fork(j) (rng.ts): images depend only on (seed, i, j), never on the batch
 *   size, the batch a unit lands in, or the shard that runs it.
 * - Shard K of N (K from 0) runs the units with u mod N == K: every shard gets an even share of every caption's work,
 *   whatever the caption count, and the N shards together run every unit exactly once.
 * - `--shard auto` reads the array-job environment, in this order:
 *     Slurm job arrays:  SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (K = ID - SLURM_ARRAY_TASK_MIN, or ID when
 *                        MIN is not set), or, without COUNT, SLURM_ARRAY_TASK_MIN..SLURM_ARRAY_TASK_MAX with step
 *                        SLURM_ARRAY_TASK_STEP (default 1): K = (ID - MIN) / STEP, N = (MAX - MIN) / STEP + 1.
 *     Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX = K, with N from DALLE_SHARD_COUNT (Kubernetes sets no count
 *                        variable: put `env: [{name: DALLE_SHARD_COUNT, value: "<spec.completions>"}]` in the pod).
 *   Neither present: an error (auto means "I am an array task").
 * - Files: c{i}-s{j}.png, i zero-padded to at least 5 digits and j to 3 (never the caption text).
 */
import { envNonNegativeInt, KUBERNETES_INDEX_VAR } from '../job-env';
import { Philox } from '../tensor/rng';

/** A --shard value that cannot be used; `hint` says what to do. Exit code 2 (bad flags). */
export class ShardError extends Error {
  override readonly name = 'ShardError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export interface Shard {
  /** 0-based. */
  readonly index: number;
  readonly count: number;
  /** Where it came from ("--shard 1/4", "SLURM_ARRAY_TASK_ID=3, SLURM_ARRAY_TASK_COUNT=8"). */
  readonly source: string;
}

export const WHOLE_JOB: Shard = { index: 0, count: 1, source: 'no --shard' };

const SHARD_HINT = 'give --shard K/N with 0 <= K < N (e.g. --shard 0/4 ... --shard 3/4 for four jobs), or --shard auto inside a Slurm array or Kubernetes Indexed Job';

function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  return envNonNegativeInt(env, name, (problem) => new ShardError(`--shard auto: ${problem}`, SHARD_HINT));
}

function checked(index: number, count: number, source: string): Shard {
  if (!(Number.isSafeInteger(count) && count >= 1)) throw new ShardError(`shard count must be an integer >= 1, got ${count} (from ${source})`, SHARD_HINT);
  if (!(Number.isSafeInteger(index) && index >= 0 && index < count)) {
    throw new ShardError(`shard index must be in 0..${count - 1} (0-based), got ${index} (from ${source})`, SHARD_HINT);
  }
  return { index, count, source };
}

/** Parses `--shard K/N` or `--shard auto` (see the module comment); undefined = the whole job. */
export function parseShard(text: string | undefined, env: NodeJS.ProcessEnv = process.env): Shard {
  if (text === undefined) return WHOLE_JOB;
  const trimmed = text.trim();
  if (trimmed === 'auto') return shardFromEnv(env);
  const m = /^(\d+)\s*\/\s*(\d+)$/.exec(trimmed);
  if (!m) throw new ShardError(`--shard ${JSON.stringify(text)} is not K/N or auto`, SHARD_HINT);
  return checked(Number(m[1]), Number(m[2]), `--shard ${trimmed}`);
}

export function shardFromEnv(env: NodeJS.ProcessEnv): Shard {
  const id = envInt(env, 'SLURM_ARRAY_TASK_ID');
  if (id !== undefined) {
    const min = envInt(env, 'SLURM_ARRAY_TASK_MIN');
    const count = envInt(env, 'SLURM_ARRAY_TASK_COUNT');
    if (count !== undefined) {
      return checked(id - (min ?? 0), count, `SLURM_ARRAY_TASK_ID=${id}${min !== undefined ? `, SLURM_ARRAY_TASK_MIN=${min}` : ''}, SLURM_ARRAY_TASK_COUNT=${count}`);
    }
    const max = envInt(env, 'SLURM_ARRAY_TASK_MAX');
    if (min === undefined || max === undefined) {
      throw new ShardError('--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX are', SHARD_HINT);
    }
    const step = envInt(env, 'SLURM_ARRAY_TASK_STEP') ?? 1;
    if (step < 1 || (id - min) % step !== 0 || (max - min) % step !== 0) {
      throw new ShardError(`--shard auto: SLURM_ARRAY_TASK_ID=${id} does not lie on ${min}..${max} step ${step}`, SHARD_HINT);
    }
    return checked((id - min) / step, (max - min) / step + 1, `SLURM_ARRAY_TASK_ID=${id}, SLURM_ARRAY_TASK_MIN=${min}, SLURM_ARRAY_TASK_MAX=${max}, step ${step}`);
  }
  const k8s = envInt(env, KUBERNETES_INDEX_VAR);
  if (k8s !== undefined) {
    const count = envInt(env, 'DALLE_SHARD_COUNT');
    if (count === undefined) {
      throw new ShardError('--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but DALLE_SHARD_COUNT is not', 'set DALLE_SHARD_COUNT to the Job\'s spec.completions in the pod\'s env');
    }
    return checked(k8s, count, `JOB_COMPLETION_INDEX=${k8s}, DALLE_SHARD_COUNT=${count}`);
  }
  throw new ShardError('--shard auto: no array-job environment (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX) is set', SHARD_HINT);
}

export interface Unit {
  /** Caption index (0-based, in the order the captions were given). */
  readonly caption: number;
  /** Sample index for that caption (0-based). */
  readonly sample: number;
}

/** The units of one shard, in ascending unit number (caption-major). */
export function shardUnits(captions: number, samples: number, shard: Shard): Unit[] {
  const units: Unit[] = [];
  const total = captions * samples;
  for (let u = shard.index; u < total; u += shard.count) units.push({ caption: Math.floor(u / samples), sample: u % samples });
  return units;
}

/** The random stream of unit (caption, sample) under `seed`. */
export function unitRng(seed: number | bigint, unit: Unit): Philox {
  return new Philox(seed).fork(unit.caption).fork(unit.sample);
}

/** c00012-s003.png (widths grow for more than 99,999 captions or 999 samples). */
export function unitFileName(unit: Unit, captions: number, samples: number): string {
  const cw = Math.max(5, String(Math.max(0, captions - 1)).length);
  const sw = Math.max(3, String(Math.max(0, samples - 1)).length);
  return `c${String(unit.caption).padStart(cw, '0')}-s${String(unit.sample).padStart(sw, '0')}.png`;
}
