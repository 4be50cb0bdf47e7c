/** The `runtime` section shared by every config: where and how a job runs, not what it computes. */
import { InvalidDeviceError, parseDevice } from '../../backend/device';
import { int, num, oneOf, str } from '../fields';
import { Resolved, Section } from '../schema';

/** The device names runtime.device and --device accept (backend/device.ts parses them). */
export const DEVICE_NAMES = 'cpu, cuda or cuda:N';
export const PRECISIONS = ['fp32', 'bf16', 'fp16'] as const;

export const runtimeSection = {
  seed: int(0, 'seeds every random stream (init, data order, dropout, sampling)', { min: 0, max: 2 ** 32 - 1 }),
  threads: int(0, 'CPU threads for the native kernels; 0 = all cores (env DALLE_THREADS)', { min: 0 }),
  device: str('cpu', `where tensors live: ${DEVICE_NAMES} (N = the GPU's index; cuda = cuda:0); cpu always works, cuda needs the CUDA build and a GPU`, {
    check: checkDeviceName,
  }),
  precision: oneOf(PRECISIONS, 'fp32', 'compute precision; fp32 is the reference, bf16/fp16 keep fp32 master weights'),
  dist_timeout_s: num(300, 'data-parallel runs: seconds to wait for every rank to join, and for a rank that stops answering before the others stop naming it', { greaterThan: 0 }),
} satisfies Section;

export type RuntimeConfig = Resolved<typeof runtimeSection>;
export type Device = RuntimeConfig['device'];

/** The problem with a device name, or undefined when parseDevice accepts it (a config field's `check`). */
export function checkDeviceName(name: string): string | undefined {
  try {
    parseDevice(name);
    return undefined;
  } catch (error) {
    if (error instanceof InvalidDeviceError) return `expected ${DEVICE_NAMES} (N = the GPU's index, 0 first), got '${name}'`;
    throw error;
  }
}
export type Precision = RuntimeConfig['precision'];
