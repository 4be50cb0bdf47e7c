/**
 * The collective operations a data-parallel training run needs, behind one interface: one process (every operation a
 * no-op), Gloo for CPU processes (native/collective, built where Debian's libgloo-dev is), NCCL for CUDA devices
 * (loaded at run time by the CUDA addon). The training loop (train/loop.ts) talks to this interface only.
 *
 * Order: every rank issues the same operations in the same order (the loop is deterministic); each backend runs them
 * in issue order on one communication thread, so an operation started while backward goes on (a gradient bucket)
 * overlaps with the computation and completes before any later one.
 *
 * Faults: an operation that cannot complete (a rank died, or stopped answering for `timeoutMs`) rejects (or throws)
 * a CollectiveError that names the rank when it can be known.
 */

export type ReduceOp = 'sum' | 'max' | 'min';

/** Where a rank stands and how it finds the others: what every backend and openCollective take. */
export interface RankPlacement {
  /** 0 .. worldSize-1. */
  rank: number;
  worldSize: number;
  /** The rank's index on its machine (picks cuda:LOCAL_RANK). */
  localRank: number;
  /** Where rank 0 serves the store (MASTER_ADDR, MASTER_PORT). */
  masterAddr: string;
  masterPort: number;
  /** runtime.dist_timeout_s in ms: the rendezvous and every operation; a rank silent this long is given up on. */
  timeoutMs: number;
}

/** How often each rank tells the store it is alive when not told: timeoutMs / 6, within 100 .. 1000 ms. */
export function defaultHeartbeatMs(timeoutMs: number): number {
  return Math.min(1000, Math.max(100, Math.round(timeoutMs / 6)));
}

/** Which library carries the operations. */
export type CollectiveBackendName = 'single' | 'gloo' | 'nccl';

/** A run of `count` f32 values at `address` on the collective's device (a tensor's storage: Tensor.address). */
export interface DeviceBuffer {
  readonly address: number;
  readonly count: number;
}

export interface Collective {
  readonly backend: CollectiveBackendName;
  /** 0 .. worldSize-1; rank 0 writes the run's files. */
  readonly rank: number;
  readonly worldSize: number;
  /** The rank's index on its machine (picks cuda:LOCAL_RANK). */
  readonly localRank: number;
  /**
   * In place, over host memory: every rank ends with the reduction of every rank's `data`. Resolves when done; the
   * array must not be touched meanwhile.
   */
  allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void>;
  /** The same, blocking the caller (for a value a forward pass needs at once, such as a batch statistic). */
  allReduceSync(data: Float32Array | Float64Array, op: ReduceOp): void;
  /**
   * In place, over device memory (tensor storages): the buffers are packed into one message (a bucket), reduced, and
   * unpacked. Resolves when done; the buffers must not be written meanwhile.
   */
  allReduceBuffers(buffers: readonly DeviceBuffer[], op: ReduceOp): Promise<void>;
  /** `data` of rank `root` copied into every rank's `data` (same length on every rank). */
  broadcast(data: Uint8Array, root: number): Promise<void>;
  /** Resolves when every rank has called it. */
  barrier(): Promise<void>;
  /** Bytes this rank has handed to reductions so far (payload, not the algorithm's traffic). */
  readonly bytesReduced: number;
  /** Leaves the group (idempotent). Pending operations reject. */
  close(): void;
}

/**
 * What went wrong, when a backend can tell: a rank `exited` (its connection closed without leaving), went `silent`
 * (no heartbeat: stopped, hung machine), `never-joined` the rendezvous, `left` (closed its collective), the rendezvous
 * store on rank 0 is gone (`store-gone`); `unknown` (every rank alive: one is behind or issued another operation),
 * `closed` (this process closed it), `unavailable` (the backend is not built), `listen` (rank 0 cannot serve the
 * store), `usage` (a bad argument).
 */
export type CollectiveFaultKind =
  | 'exited' | 'silent' | 'never-joined' | 'left' | 'store-gone' | 'unknown' | 'closed' | 'unavailable' | 'listen' | 'usage';

/** A collective operation that could not complete: a rank died or stopped answering, or the group never formed. */
export class CollectiveError extends Error {
  override readonly name = 'CollectiveError';
  constructor(
    message: string,
    readonly hint: string,
    /** The rank at fault, when known. */
    readonly faultyRank?: number,
    readonly kind?: CollectiveFaultKind,
  ) {
    super(message);
  }
}

/** One process: every reduction leaves the data as it is (the reduction of one value is itself). */
export class SingleProcess implements Collective {
  readonly backend = 'single' as const;
  readonly rank = 0;
  readonly worldSize = 1;
  readonly localRank = 0;
  bytesReduced = 0;

  async allReduce(data: Float32Array | Float64Array): Promise<void> {
    this.bytesReduced += data.byteLength;
  }

  allReduceSync(data: Float32Array | Float64Array): void {
    this.bytesReduced += data.byteLength;
  }

  async allReduceBuffers(buffers: readonly DeviceBuffer[]): Promise<void> {
    for (const b of buffers) this.bytesReduced += 4 * b.count;
  }

  async broadcast(): Promise<void> {}

  async barrier(): Promise<void> {}

  close(): void {}
}
