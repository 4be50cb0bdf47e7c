// A block of memory on one backend (the CPU's caching allocator, or a GPU's), shared by a tensor and its views (reference counted).
// Memory is released deterministically: when the last tensor using it is disposed (directly, or by the scope that
// created it). A FinalizationRegistry is only a safety net for storages a program forgot; it counts them so tests and
// benchmarks can see leaks.
import { Backend } from '../backend/backend';
import { activeBackend } from '../backend/registry';

let leakedByGc = 0;
let liveBytes = 0;
let liveCount = 0;
const finalizer = new FinalizationRegistry<{ backend: Backend; address: number; bytes: number; freed: { done: boolean } }>((held) => {
  if (!held.freed.done) {
    held.freed.done = true;
    leakedByGc++;
    held.backend.free(held.address, held.bytes);
  }
});

export class Storage {
  readonly address: number;
  readonly bytes: number;
  /** The backend whose memory this is (a tensor's device is its storage's). */
  readonly backend: Backend;
  private refs = 1;
  private readonly freed = { done: false };

  /** `bytes` on `backend` (default: the running op's backend, which is the CPU outside ops). */
  constructor(bytes: number, backend: Backend = activeBackend()) {
    this.bytes = bytes;
    this.backend = backend;
    this.address = bytes > 0 ? backend.alloc(bytes) : 0;
    liveBytes += bytes;
    liveCount++;
    if (bytes > 0) finalizer.register(this, { backend, address: this.address, bytes, freed: this.freed }, this);
  }

  get alive(): boolean {
    return !this.freed.done;
  }

  retain(): void {
    if (this.freed.done) throw new Error('dalle: cannot use a tensor whose memory was already released (disposed)');
    this.refs++;
  }

  release(): void {
    if (this.freed.done) return;
    if (--this.refs > 0) return;
    this.freed.done = true;
    liveBytes -= this.bytes;
    liveCount--;
    if (this.bytes > 0) {
      finalizer.unregister(this);
      this.backend.free(this.address, this.bytes);
    }
  }
}

/** Bytes and count of tensor storages alive now (kernel workspaces, which the allocator also counts, are not). */
export function liveStorage(): { bytes: number; count: number } {
  return { bytes: liveBytes, count: liveCount };
}

/** Storages freed by the garbage collector instead of dispose: a leak in the program that made them. */
export function storagesLeakedToGc(): number {
  return leakedByGc;
}
