/** The `runtime` section shared by every config: where and how a job runs, not what it computes. */
import { int, oneOf } from '../fields';
import { Resolved, Section } from '../schema';

export const DEVICES = ['cpu', 'cuda'] as const;
export const PRECISIONS = ['fp32', 'bf16', 'fp16'] as const;

export const runtimeSection = {
  seed: int(0, 'seeds every random stream (init, data order, dropout, sampling)', { min: 0, max: 2 ** 32 - 1 }),
  threads: int(0, 'CPU threads for the native kernels; 0 = all cores (env DALLE_THREADS)', { min: 0 }),
  device: oneOf(DEVICES, 'cpu', 'where tensors live: cpu always works; cuda needs the CUDA build and a GPU'),
  precision: oneOf(PRECISIONS, 'fp32', 'compute precision; fp32 is the reference, bf16/fp16 keep fp32 master weights'),
} satisfies Section;

export type RuntimeConfig = Resolved<typeof runtimeSection>;
export type Device = RuntimeConfig['device'];
export type Precision = RuntimeConfig['precision'];
