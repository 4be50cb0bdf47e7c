// A block of native memory from the caching allocator, shared by a tensor and its views (reference counted).
// Memory is released deterministically: when the last tensor using it is disposed (directly, or by the scope that
// created it). A FinalizationRegistry is only a safety net for storages a program forgot; it counts them so tests and
// benchmarks can see leaks.
import { native } from '../native';

let leakedByGc = 0;
let liveBytes = 0;
let liveCount = 0;
const finalizer = new FinalizationRegistry<{ address: number; bytes: number; freed: { done: boolean } }>((held) => {
  if (!held.freed.done) {
    held.freed.done = true;
    leakedByGc++;
    native.free(held.address, held.bytes);
  }
});

export class Storage {
  readonly address: number;
  readonly bytes: number;
  private refs = 1;
  private readonly freed = { done: false };

  constructor(bytes: number) {
    this.bytes = bytes;
    this.address = bytes > 0 ? native.alloc(bytes) : 0;
    liveBytes += bytes;
    liveCount++;
    if (bytes > 0) finalizer.register(this, { address: this.address, bytes, freed: this.freed }, this);
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
      native.free(this.address, this.bytes);
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
