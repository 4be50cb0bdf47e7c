// A stand-in GPU for tests on machines without one: host memory (the main addon's allocator) registered as 'cuda:0',
// with a kernel table that forwards to the CPU kernels. It proves dispatch and transfer boundaries, not CUDA kernels:
// every tensor an op makes lands on this backend, every kernel is looked up here (and must be one the running op
// declared), and every host <-> device copy is counted, so a test can assert that only the explicit ones happened.
import { Backend, KernelTable, cpuBackend, opScope, registerBackend } from '../../src/core/backend';

export interface FakeDevice {
  readonly backend: Backend;
  /** Host -> device and device -> host copies so far. */
  readonly copies: { in: number; out: number };
  /** Kernels looked up by an op that did not declare them ("op: kernel"). */
  readonly undeclared: string[];
  /** The kernels looked up here, in ops or outside them (what a job needs of a device: core/job-ops.ts). */
  readonly kernelsUsed: Set<string>;
  /** Unregisters the stand-in (the device is then unknown again). */
  remove(): void;
}

/** Registers the stand-in as 'cuda:0'; `kernels`, when given, limits its table to those names (a partial backend). */
export function installFakeDevice(kernels?: readonly string[]): FakeDevice {
  const copies = { in: 0, out: 0 };
  const undeclared: string[] = [];
  const kernelsUsed = new Set<string>();
  const cpu = cpuBackend.kernels as Record<string, unknown>;
  const table = new Proxy(cpu, {
    get(target, name: string) {
      if (kernels && !kernels.includes(name)) return undefined;
      if (typeof target[name] !== 'function') return target[name];
      kernelsUsed.add(name);
      if (opScope.op !== '' && !opScope.kernels.includes(name)) undeclared.push(`${opScope.op}: ${name}`);
      return target[name];
    },
  }) as KernelTable;
  const backend: Backend = {
    ...cpuBackend,
    device: 'cuda:0',
    kernels: table,
    copyIn(address, data) {
      copies.in++;
      cpuBackend.copyIn(address, data);
    },
    copyOut(address, data) {
      copies.out++;
      cpuBackend.copyOut(address, data);
    },
  };
  const remove = registerBackend(backend);
  return { backend, copies, undeclared, kernelsUsed, remove };
}
