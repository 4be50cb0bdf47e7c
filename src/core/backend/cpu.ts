// The CPU backend: the main addon (native/src, native/cpu) itself. Its memory functions and kernels are the addon's
// functions, unwrapped, so the CPU path costs exactly what it did before backends existed.
import { native } from '../native';
import { Backend, KernelTable } from './backend';

export const cpuBackend: Backend = {
  device: 'cpu',
  kernels: native as unknown as KernelTable,
  alloc: native.alloc,
  free: native.free,
  copyIn: native.copyIn,
  copyOut: native.copyOut,
  memcpy: native.memcpy,
  fill: native.fill,
  stridedCopy: native.stridedCopy,
  cast: native.cast,
  allocStats: native.allocStats,
};
