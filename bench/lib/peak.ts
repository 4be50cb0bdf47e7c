// The machine's measured peak, for "% of peak" columns: bench/out/openblas_gemm (built by bench/setup.sh) runs 12
// independent vfmadd231ps / vdpbf16ps zmm chains on T threads. Without it, an assumed 64 / 128 FLOP per cycle per
// core at 3.3 GHz is used, and said.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const OPENBLAS_BIN = path.join(__dirname, '..', '..', '..', 'bench', 'out', 'openblas_gemm');

export interface Peak {
  fp32: number;
  bf16: number;
  measured: boolean;
}

export function measuredPeak(threads: number): Peak {
  if (fs.existsSync(OPENBLAS_BIN)) {
    const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
    const r = spawnSync(OPENBLAS_BIN, ['peak', String(threads)], { env, encoding: 'utf8' });
    const fp32 = Number(/peak fp32 ([\d.]+)/.exec(r.stdout ?? '')?.[1] ?? 0);
    const bf16 = Number(/peak bf16 ([\d.]+)/.exec(r.stdout ?? '')?.[1] ?? 0);
    if (r.status === 0 && fp32 > 0) return { fp32, bf16: bf16 > 0 ? bf16 : 2 * fp32, measured: true };
  }
  return { fp32: threads * 64 * 3.3, bf16: threads * 128 * 3.3, measured: false };
}
