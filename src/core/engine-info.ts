// Facts about the engine on this machine, for `dalle info` and for bug reports.
import * as path from 'path';
import { CudaStatus, cudaStatus } from './cuda';
import { native } from './native';
import './ops';
import { registeredOps } from './tensor';

export interface EngineReport {
  version: string;
  node: string;
  platform: string;
  cpu: { isa: string; avx2: boolean; avx512: boolean; avx512bf16: boolean };
  threads: number;
  /** A CUDA device answered through the CUDA addon (details in cudaStatus). */
  cuda: boolean;
  cudaStatus: CudaStatus;
  ops: string[];
}

export function engineReport(): EngineReport {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const pkg = require(path.join(__dirname, '..', '..', '..', 'package.json')) as { version: string };
  const info = native.cpuInfo();
  const cuda = cudaStatus();
  return {
    version: pkg.version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: { isa: info.isa, avx2: info.avx2, avx512: info.avx512, avx512bf16: info.avx512bf16 },
    threads: native.numThreads(),
    cuda: cuda.available,
    cudaStatus: cuda,
    ops: registeredOps().map((op) => op.name).sort(),
  };
}
