// Applies a config's runtime section to the engine before a job: thread count and device. Commands call it after
// resolving their config (the `config` command does not, so printing a config never loads the native addon).
// A GPU device is refused at the start, saying why, rather than letting a command half-run: without a usable GPU
// (the reason from the CUDA addon), or while some op or engine kernel has no kernel on it (listed).
import { Backend, DeviceUnavailableError, backendFor, missingKernels, parseDevice } from './backend';
import { RuntimeConfig } from './config/schemas/runtime';
import { native } from './native';
import { unsupportedOps } from './tensor/op';
import { BLAS1_KERNELS } from './tensor/blas1';
import { RANDOM_KERNELS } from './tensor/random';
import { ADAMW_KERNELS } from './train/adamw';
import './ops';

export { DeviceUnavailableError };

export interface EngineInfo {
  threads: number;
  isa: string;
  device: 'cpu';
}

/** Kernels the engine calls outside ops (memory fills and copies, gradient accumulation, random tensors, AdamW). */
export const ENGINE_KERNELS: readonly string[] = ['fill', 'stridedCopy', ...BLAS1_KERNELS, ...RANDOM_KERNELS, ...ADAMW_KERNELS];

/** What a backend lacks for a whole job: ops with their missing kernels, and engine kernels outside ops. */
export function backendGaps(backend: Backend): { ops: Array<{ op: string; missing: readonly string[] }>; engine: string[] } {
  return { ops: unsupportedOps(backend), engine: missingKernels(backend, ENGINE_KERNELS) };
}

/** The refusal of a device that is there but cannot run a whole job yet. */
export function deviceRefusal(backend: Backend): string {
  const { ops, engine } = backendGaps(backend);
  const parts: string[] = [];
  if (ops.length > 0) {
    parts.push(`${ops.length} op(s) have no kernel there yet: ${ops.map((o) => `${o.op} (${o.missing.join(', ')})`).join('; ')}`);
  }
  if (engine.length > 0) parts.push(`engine kernels missing there: ${engine.join(', ')}`);
  if (parts.length === 0) parts.push('every op has a kernel there, but the commands do not place their models on a GPU yet');
  return `runtime.device is ${backend.device}: ${parts.join('; ')}; use --device cpu`;
}

export function applyRuntime(runtime: Pick<RuntimeConfig, 'threads' | 'device'>): EngineInfo {
  if (runtime.device !== 'cpu') {
    let backend: Backend;
    try {
      backend = backendFor(parseDevice(runtime.device));
    } catch (err) {
      if (err instanceof DeviceUnavailableError) {
        throw new DeviceUnavailableError(`runtime.device is ${runtime.device}: ${err.message.replace(/^dalle: /, '')}; use --device cpu`);
      }
      throw err;
    }
    throw new DeviceUnavailableError(deviceRefusal(backend));
  }
  const threads = native.setThreads(runtime.threads);
  return { threads, isa: native.cpuInfo().isa, device: 'cpu' };
}
