// A backend is a table of functions for one device (ggml-style): its memory (alloc, free, host <-> device copies,
// device-to-device copies, fill, strided copy, cast), its allocator's statistics, and its kernels by NAME. A kernel has
// the same name and the same signature on every backend (device addresses in place of host addresses), so an op is
// written once against names and runs on whichever backend holds its inputs.
import { AllocStats } from '../native';
import { Device } from './device';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Kernel = (...args: any[]) => unknown;
export type KernelTable = Readonly<Record<string, unknown>>;
export type FillKind = 'f32' | 'i32' | 'u16';

export interface Backend {
  readonly device: Device;
  /** Kernels by name; a name whose value is not a function is a kernel this backend lacks. */
  readonly kernels: KernelTable;
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  /** Host -> device: data.byteLength bytes to `address`. */
  copyIn(address: number, data: ArrayBufferView): void;
  /** Device -> host: data.byteLength bytes from `address`. */
  copyOut(address: number, data: ArrayBufferView): void;
  /** Device -> same device. */
  memcpy(dst: number, src: number, bytes: number): void;
  fill(dst: number, count: number, value: number, kind: FillKind): void;
  stridedCopy(dst: number, src: number, itemBytes: number, shape: number[], dstStrides: number[], srcStrides: number[]): void;
  cast(dst: number, dstDtype: string, src: number, srcDtype: string, count: number): void;
  allocStats(): AllocStats;
  /** Restarts allocStats().peakBytesInUse from the bytes in use now (a job measures its own peak). */
  resetPeak(): void;
}

/** A kernel the running op needs and the backend of its inputs does not have. */
export class MissingKernelError extends Error {
  override name = 'MissingKernelError';
}

/** The named kernels a backend lacks (in the order given). */
export function missingKernels(backend: Backend, names: readonly string[]): string[] {
  return names.filter((n) => typeof backend.kernels[n] !== 'function');
}

/** A backend's kernel by name, typed by the caller; a missing one is a MissingKernelError naming it and the device. */
export function backendKernel<F extends Kernel>(backend: Backend, name: string): F {
  const fn = backend.kernels[name];
  if (typeof fn !== 'function') {
    throw new MissingKernelError(`dalle: the ${backend.device} backend has no kernel '${name}'`);
  }
  return fn as F;
}
