// Applies a config's runtime section to the engine before a job: thread count and device. Commands call it after
// resolving their config (the `config` command does not, so printing a config never loads the native addon).
import { RuntimeConfig } from './config/schemas/runtime';
import { cudaStatus } from './cuda';
import { native } from './native';

export interface EngineInfo {
  threads: number;
  isa: string;
  device: 'cpu';
}

export class DeviceUnavailableError extends Error {
  override name = 'DeviceUnavailableError';
}

export function applyRuntime(runtime: Pick<RuntimeConfig, 'threads' | 'device'>): EngineInfo {
  if (runtime.device === 'cuda') {
    // The CUDA addon (src/core/cuda) is loaded here, lazily; its kernels are checked against the CPU ones
    // (bench/cuda-check.sh), but tensors do not live on the GPU yet, so cuda is refused either way, saying why.
    const cuda = cudaStatus();
    const found = cuda.available
      ? `the CUDA addon found ${cuda.devices.map((d) => `${d.name} (sm_${d.computeCapability.replace('.', '')})`).join(', ')}, but`
      : `${cuda.reason}, and`;
    throw new DeviceUnavailableError(
      `runtime.device is cuda: ${found} this build of dalle has no CUDA backend yet; use --device cpu`,
    );
  }
  const threads = native.setThreads(runtime.threads);
  return { threads, isa: native.cpuInfo().isa, device: 'cpu' };
}
