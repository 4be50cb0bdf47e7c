// Which backend serves which device, and which backend the running op computes on.
// The CPU backend always exists; a CUDA backend is made on first use from the CUDA addon (or an error says why there
// is none). Tests register a stand-in backend for a device (test/harness/fake-device.ts).
// While an op runs (applyOp in tensor/op.ts), the backend of its inputs is "active": the op's kernels are looked up
// there (opKernel) and the tensors it makes without naming a device are made there, so an op is written once.
import { cudaAddon, cudaStatus } from '../cuda';
import { Backend, Kernel, MissingKernelError } from './backend';
import { cpuBackend } from './cpu';
import { createCudaBackend } from './cuda';
import { Device, cudaIndex, parseDevice } from './device';

export class DeviceUnavailableError extends Error {
  override name = 'DeviceUnavailableError';
}

const backends = new Map<string, Backend>([['cpu', cpuBackend]]);

/** The backend of a device ('cuda' = 'cuda:0'); DeviceUnavailableError when there is no such GPU here. */
export function backendFor(device: string): Backend {
  const known = backends.get(device);
  if (known) return known;
  const canonical = parseDevice(device);
  const again = backends.get(canonical);
  if (again) return again;
  const index = cudaIndex(canonical)!;
  const status = cudaStatus();
  if (!status.available) throw new DeviceUnavailableError(`dalle: device ${canonical}: ${status.reason}`);
  if (index >= status.devices.length) {
    throw new DeviceUnavailableError(
      `dalle: device ${canonical}: this machine has ${status.devices.length} GPU(s) (cuda:0 to cuda:${status.devices.length - 1})`,
    );
  }
  const made = createCudaBackend(cudaAddon(), canonical, index);
  backends.set(canonical, made);
  return made;
}

/** The backends made so far (the CPU first). */
export function loadedBackends(): Backend[] {
  return [...backends.values()];
}

/** Serves `backend.device` with `backend` until the returned function is called (tests: a stand-in device). */
export function registerBackend(backend: Backend): () => void {
  const prev = backends.get(backend.device);
  backends.set(backend.device, backend);
  return () => {
    if (prev) backends.set(backend.device, prev);
    else backends.delete(backend.device);
  };
}

/**
 * The running op: its backend and the kernel names it declared (a stand-in device checks every kernel looked up
 * against them). Mutated in place by applyOp (saved and restored around the op), so entering an op allocates nothing.
 */
export const opScope: { backend: Backend; kernels: readonly string[]; op: string } = {
  backend: cpuBackend,
  kernels: [],
  op: '',
};

/** The backend the running op computes on (the CPU outside ops). */
export function activeBackend(): Backend {
  return opScope.backend;
}

/** Runs fn as op `op` on `backend` (applyOp's backward does this; its forward inlines the same). */
export function inOpScope<T>(op: string, backend: Backend, kernels: readonly string[], fn: () => T): T {
  const { backend: pb, kernels: pk, op: po } = opScope;
  opScope.backend = backend;
  opScope.kernels = kernels;
  opScope.op = op;
  try {
    return fn();
  } finally {
    opScope.backend = pb;
    opScope.kernels = pk;
    opScope.op = po;
  }
}

/** The running op's kernel by name, from the active backend. */
export function opKernel<F extends Kernel>(name: string): F {
  const active = opScope.backend;
  const fn = active.kernels[name];
  if (typeof fn !== 'function') throw new MissingKernelError(`dalle: the ${active.device} backend has no kernel '${name}'`);
  return fn as F;
}

export { cpuBackend };
