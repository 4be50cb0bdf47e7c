// Applies a config's runtime section to the engine before a job: thread count and device. Commands call it after
// resolving their config (the `config` command does not, so printing a config never loads the native addon).
// A GPU device is refused at the start, saying why, rather than letting a command half-run: without a usable GPU
// (the reason from the CUDA addon), or while an op the job runs (job-ops.ts) or an engine kernel it calls has no
// kernel there (listed). Otherwise the job runs there: its models, batches and optimizer state on the device.
import { Backend, Device, DeviceUnavailableError, backendFor, missingKernels, parseDevice } from './backend';
import { RuntimeConfig } from './config/schemas/runtime';
import { ComputeJob, JOB_OPS } from './job-ops';
import { native } from './native';
import { opMissingKernels, registeredOps, unsupportedOps } from './tensor/op';
import { BLAS1_KERNELS } from './tensor/blas1';
import { RANDOM_KERNELS } from './tensor/random';
import { ADAMW_KERNELS } from './train/adamw';
import './ops';

export { DeviceUnavailableError };

export interface EngineInfo {
  threads: number;
  isa: string;
  /** Where the job computes (canonical: 'cuda' is 'cuda:0'). */
  device: Device;
}

/** Kernels the engine calls outside ops (memory fills and copies, gradient accumulation, random tensors, AdamW). */
export const ENGINE_KERNELS: readonly string[] = ['fill', 'stridedCopy', ...BLAS1_KERNELS, ...RANDOM_KERNELS, ...ADAMW_KERNELS];
/** Those an inference job calls (no gradients, no optimizer, no noise). */
const INFERENCE_ENGINE_KERNELS: readonly string[] = ['fill', 'stridedCopy'];
const TRAINING_JOBS: ReadonlySet<ComputeJob> = new Set(['train-dvae', 'train-prior', 'train-clip']);

type Gaps = { ops: Array<{ op: string; missing: readonly string[] }>; engine: string[] };

/** What a backend lacks for a job (default: for any job, every registered op): ops with their missing kernels, and
 *  engine kernels outside ops. */
export function backendGaps(backend: Backend, job?: ComputeJob): Gaps {
  if (job === undefined) return { ops: unsupportedOps(backend), engine: missingKernels(backend, ENGINE_KERNELS) };
  const needed = new Set(JOB_OPS[job]);
  const ops = registeredOps()
    .filter((def) => needed.has(def.name) && !def.fusionOf)
    .map((def) => ({ op: def.name, missing: opMissingKernels(def, backend) }))
    .filter((o) => o.missing.length > 0);
  return { ops, engine: missingKernels(backend, TRAINING_JOBS.has(job) ? ENGINE_KERNELS : INFERENCE_ENGINE_KERNELS) };
}

/** Every kernel a job may call on its device: those of its ops (job-ops.ts) and the engine's it calls outside ops. */
export function jobKernels(job: ComputeJob): Set<string> {
  const needed = new Set(JOB_OPS[job]);
  const kernels = registeredOps().filter((def) => needed.has(def.name)).flatMap((def) => def.kernels);
  return new Set([...kernels, ...(TRAINING_JOBS.has(job) ? ENGINE_KERNELS : INFERENCE_ENGINE_KERNELS)]);
}

/** The refusal of a device that is there but cannot run the job (any job when none is named), or null: it can. */
export function deviceRefusal(backend: Backend, job?: ComputeJob): string | null {
  const { ops, engine } = backendGaps(backend, job);
  const parts: string[] = [];
  if (ops.length > 0) {
    parts.push(`${ops.length} op(s) have no kernel there yet: ${ops.map((o) => `${o.op} (${o.missing.join(', ')})`).join('; ')}`);
  }
  if (engine.length > 0) parts.push(`engine kernels missing there: ${engine.join(', ')}`);
  if (parts.length === 0) return null;
  return `runtime.device is ${backend.device}${job ? ` (for ${job})` : ''}: ${parts.join('; ')}; use --device cpu`;
}

/**
 * Sets the thread count and checks the device for `job` (every op when none is named): the CPU always runs; a GPU
 * runs when it is there and has a kernel for every op the job needs, else a DeviceUnavailableError says why (exit 5).
 */
export function applyRuntime(runtime: Pick<RuntimeConfig, 'threads' | 'device'>, job?: ComputeJob): EngineInfo {
  const device = parseDevice(runtime.device);
  if (device !== 'cpu') {
    let backend: Backend;
    try {
      backend = backendFor(device);
    } catch (err) {
      if (err instanceof DeviceUnavailableError) {
        throw new DeviceUnavailableError(`runtime.device is ${runtime.device}: ${err.message.replace(/^dalle: /, '')}; use --device cpu`);
      }
      throw err;
    }
    const refusal = deviceRefusal(backend, job);
    if (refusal !== null) throw new DeviceUnavailableError(refusal);
  }
  const threads = native.setThreads(runtime.threads); // host work (data, sampling, k-means) still runs on the CPU
  return { threads, isa: native.cpuInfo().isa, device };
}
