// Facts about the engine on this machine, for `dalle info` and for bug reports.
import * as path from 'path';
import { CudaStatus, cudaAddonIfLoaded, cudaStatus } from './cuda';
import { native } from './native';
import './ops';
import { Backend, backendFor, cpuBackend, createCudaBackend } from './backend';
import { availableCollectives, CollectiveBackendStatus } from './distributed/open';
import { opMissingKernels, registeredOps } from './tensor';

/** One row of the op x backend table: the kernels the op lacks on each device ([] = it runs there). */
export interface OpBackendRow {
  op: string;
  missing: Record<string, readonly string[]>;
}

/** Every registered op against every backend here: the CPU, and CUDA whenever its addon is built (see presentBackends). */
export function opBackendTable(backends: readonly Backend[] = presentBackends()): { devices: string[]; rows: OpBackendRow[] } {
  const rows = registeredOps()
    .map((def) => ({ op: def.name, missing: Object.fromEntries(backends.map((b) => [b.device, opMissingKernels(def, b)])) }))
    .sort((a, b) => (a.op < b.op ? -1 : a.op > b.op ? 1 : 0));
  return { devices: backends.map((b) => b.device), rows };
}

// Kernel presence is a property of the build: with the CUDA addon built but no usable GPU, its column is the built
// addon's kernel table (no device selected, nothing allocated), and the report says why no GPU can use it here.
function presentBackends(): Backend[] {
  if (cudaStatus().available) return [cpuBackend, backendFor('cuda:0')];
  const addon = cudaAddonIfLoaded();
  if (!addon) return [cpuBackend];
  return [cpuBackend, createCudaBackend({ ...addon, setDevice: () => undefined }, 'cuda:0', 0)];
}

/** Beside the CUDA column when it describes the build only: why no GPU here can run it; null otherwise. */
export function cudaColumnNote(status: CudaStatus = cudaStatus()): string | null {
  return status.loaded && !status.available ? `no usable GPU here: ${status.reason}` : null;
}

/** The collective backends in one line: 'gloo (Gloo 0.5.0 over TCP, CPU ranks); not: nccl (why)'. */
export function formatCollectives(list: readonly CollectiveBackendStatus[]): string {
  const usable = list.filter((c) => c.available && c.backend !== 'single').map((c) => `${c.backend} (${c.detail})`);
  const not = list.filter((c) => !c.available).map((c) => `${c.backend} (${c.detail})`);
  return `${usable.length ? usable.join(', ') : 'one process only'}${not.length ? `; not: ${not.join('; ')}` : ''}`;
}

/** The table as text lines: one per op, 'yes' or 'no (missing kernels)' per device. */
export function formatOpBackendTable(table: { devices: string[]; rows: OpBackendRow[] }): string[] {
  const width = Math.max(2, ...table.rows.map((r) => r.op.length));
  const head = `${'op'.padEnd(width)}  ${table.devices.join('  ')}`;
  return [head, ...table.rows.map((r) => `${r.op.padEnd(width)}  ${table.devices
    .map((d) => (r.missing[d].length === 0 ? 'yes' : `no (${r.missing[d].join(', ')})`).padEnd(d.length))
    .join('  ')}`.trimEnd())];
}

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
  /** The op x backend table (which ops run on which device; what each lacks). */
  opBackends: { devices: string[]; rows: OpBackendRow[] };
  /** Set when the cuda:0 column is the built addon's kernels without a usable GPU: why there is none. */
  opBackendsNote: string | null;
  /** The data-parallel collective backends (one process, Gloo, NCCL): which this build can use, and why not. */
  collectives: CollectiveBackendStatus[];
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
    opBackends: opBackendTable(),
    opBackendsNote: cudaColumnNote(cuda),
    collectives: availableCollectives(),
  };
}
