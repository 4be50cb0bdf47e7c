// Applies a config's runtime section to the engine before a job: thread count and device. Commands call it after
// resolving their config (the `config` command does not, so printing a config never loads the native addon).
import { RuntimeConfig } from './config/schemas/runtime';
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
    throw new DeviceUnavailableError(
      'runtime.device is cuda, but this build of dalle has no CUDA backend yet; use --device cpu',
    );
  }
  const threads = native.setThreads(runtime.threads);
  return { threads, isa: native.cpuInfo().isa, device: 'cpu' };
}
