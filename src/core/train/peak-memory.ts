// The most memory a training run held on its device: the device allocator's peak, restarted when the run's own work
// begins (after its data is loaded, so a token cache's encoding or an earlier job in the same process does not count)
// and read when it ends. On the CPU this is the main addon's allocator, on a GPU the CUDA addon's caching allocator;
// both count the bytes of live tensors in their size classes (not what the allocator keeps cached).
import { Device, backendFor } from '../backend';

/** Restarts the peak of `device`'s allocator now; the returned function reads the peak bytes since then. */
export function startPeakMemory(device: Device): () => number {
  const backend = backendFor(device);
  backend.resetPeak();
  return () => backend.allocStats().peakBytesInUse;
}
