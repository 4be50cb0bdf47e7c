/**
 * The NCCL backend of Collective, for data-parallel ranks on CUDA devices: the `nccl` part of the CUDA addon
 * (native/cuda/nccl_napi.cc), which loads libnccl.so.2 at run time (DALLE_NCCL_LIB names another file), so a build or
 * a machine without NCCL loads everything else and says why it has no NCCL.
 *
 * Joining: every rank joins the TCP store that rank 0 serves (the Gloo backend's store, compiled into the CUDA addon:
 * native/collective), which records every rank's heartbeat; rank 0 makes NCCL's unique id and publishes it there, the
 * others wait for it; then every rank initialises its communicator (ncclCommInitRank) on its device.
 *
 * Operations are issued at once, in call order, on the communicator's own stream (native/cuda/nccl.h: device buffers
 * are ordered after the compute stream's work and before its later kernels by events, so a gradient bucket overlaps
 * with backward), and settle when their completion event fires. A watchdog aborts the communicator when an operation
 * does not complete within the timeout (a peer died or stopped) or NCCL reports an error; the failure is then named
 * as the Gloo backend names it, from the store's record: "rank 1 (host h, pid p) exited", "... stopped answering".
 */
import { cudaAddonIfLoaded, cudaStatus } from '../cuda';
import { Collective, CollectiveError, CollectiveFaultKind, defaultHeartbeatMs, DeviceBuffer, RankPlacement, ReduceOp } from './collective';
import { asCollectiveError, hintFor } from './gloo';

/** NCCL_UNIQUE_ID_BYTES: the id rank 0 makes and every rank initialises with. */
export const NCCL_UNIQUE_ID_BYTES = 128;
/** The store key rank 0 publishes the unique id under. */
export const NCCL_UNIQUE_ID_KEY = 'nccl/unique-id';

export interface NcclOptions extends RankPlacement {
  /** The CUDA device index of this rank (cuda:N). */
  device: number;
  /** How often each rank tells the store it is alive (default: defaultHeartbeatMs(timeoutMs)). */
  heartbeatMs?: number;
}

/** What the addon's `nccl.available()` answers. */
export interface NcclAvailability {
  ok: boolean;
  /** What was (or would be) loaded: DALLE_NCCL_LIB, else libnccl.so.2. */
  library: string;
  version?: string;
  versionCode?: number;
  deviceCount: number;
  reason: string;
}

/** A failed operation of the addon's Comm (native/cuda/nccl.h Outcome). */
interface NativeOpError extends Error {
  kind?: string;
  what?: string;
  cause?: string;
  culprit?: boolean;
  firstWhat?: string;
  firstCause?: string;
}

export interface NcclNativeComm {
  allReduceBuffers(addresses: number[], counts: number[], op: ReduceOp): Promise<void>;
  allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void>;
  allReduceSync(data: Float32Array | Float64Array, op: ReduceOp): void;
  broadcast(data: Uint8Array, root: number): Promise<void>;
  close(): void;
}

/** The store's finding about a failure (native/collective/liveness.h Fault). */
export interface NcclNativeFault {
  kind: string;
  message: string;
  faultyRank?: number;
}

export interface NcclNativeRendezvous {
  join(): Promise<void>;
  publish(key: string, value: Uint8Array): Promise<void>;
  wait(key: string): Promise<Uint8Array>;
  fault(what: string, cause: string, rendezvous: boolean): Promise<NcclNativeFault>;
  faultSync(what: string, cause: string): NcclNativeFault;
  leave(): Promise<void>;
}

export interface NcclRendezvousOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  heartbeatMs: number;
}

/** The `nccl` object of the CUDA addon (native/cuda/nccl_napi.cc). */
export interface NcclNative {
  available(): NcclAvailability;
  uniqueId(): Uint8Array;
  init(rank: number, worldSize: number, id: Uint8Array, device: number, timeoutMs: number): Promise<NcclNativeComm>;
  Rendezvous: new (options: NcclRendezvousOptions) => NcclNativeRendezvous;
}

export interface NcclStatus {
  available: boolean;
  /** Why not ('' when available). */
  reason: string;
  version?: string;
  library?: string;
}

/** The addon's `nccl` object, or why there is none (the CUDA addon is not built, did not load, or predates NCCL). */
export function ncclNative(): { native: NcclNative | null; reason: string } {
  const addon = cudaAddonIfLoaded() as unknown as { nccl?: NcclNative } | null;
  if (!addon) return { native: null, reason: `NCCL comes with the CUDA addon, and ${cudaStatus().reason}` };
  if (!addon.nccl) return { native: null, reason: 'the CUDA addon was built without NCCL support: rebuild it (npm run install)' };
  return { native: addon.nccl, reason: '' };
}

/** Whether NCCL can be used here (the addon, libnccl.so.2, a GPU), and why not; never throws. */
export function ncclStatus(native: NcclNative | null = ncclNative().native): NcclStatus {
  if (!native) return { available: false, reason: ncclNative().reason };
  const a = native.available();
  return a.ok
    ? { available: true, reason: '', version: a.version, library: a.library }
    : { available: false, reason: a.reason, library: a.library };
}

/** What to do when NCCL cannot be used (open.ts says it too). */
export const NCCL_UNAVAILABLE_HINT =
  "install NCCL (Debian/Ubuntu: apt install libnccl2; or pip's nvidia-nccl-cu12, as PyTorch brings) or point " +
  'DALLE_NCCL_LIB at its libnccl.so.2; or train data-parallel on the CPU (--device cpu, Gloo), or on one GPU (one process)';

const INIT_HINT =
  'NCCL could not connect the ranks: rerun with NCCL_DEBUG=WARN (or INFO) to see why; NCCL_SOCKET_IFNAME picks the ' +
  'network interface on a machine with several; raise runtime.dist_timeout_s if a rank is only slow to start';

function unavailable(message: string, hint = NCCL_UNAVAILABLE_HINT): CollectiveError {
  return new CollectiveError(`dalle: ${message}`, hint, undefined, 'unavailable');
}

const FAULT_KINDS: readonly CollectiveFaultKind[] = [
  'exited', 'silent', 'never-joined', 'left', 'store-gone', 'unknown', 'closed', 'unavailable', 'listen', 'usage',
];

/** The store's finding as a CollectiveError; `hint` replaces the kind's usual hint when given. */
function faultError(f: NcclNativeFault, hint?: string): CollectiveError {
  const kind = FAULT_KINDS.includes(f.kind as CollectiveFaultKind) ? (f.kind as CollectiveFaultKind) : 'unknown';
  const message = f.message.startsWith('dalle:') ? f.message : `dalle: ${f.message}`;
  return new CollectiveError(message, hint ?? hintFor(kind, f.faultyRank), f.faultyRank, kind);
}

const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'max', 'min'];

function checkReduceOp(op: ReduceOp): void {
  if (!REDUCE_OPS.includes(op)) {
    throw new CollectiveError(`dalle: unknown reduction '${op}' (sum, max or min)`, hintFor('usage', undefined), undefined, 'usage');
  }
}

/** `promise`, or a rejection saying it did not settle within `ms` (the timer keeps the process alive meanwhile). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`it did not complete within ${(ms / 1000).toFixed(1)} s`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

export class NcclCollective implements Collective {
  readonly backend = 'nccl' as const;
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly device: number;
  bytesReduced = 0;
  private closed = false;
  /** The first failure's finding, shared by every operation that fails after it. */
  private diagnosis?: Promise<CollectiveError>;
  private diagnosed?: CollectiveError;

  private constructor(private readonly comm: NcclNativeComm, private readonly rendezvous: NcclNativeRendezvous, options: NcclOptions) {
    this.rank = options.rank;
    this.worldSize = options.worldSize;
    this.localRank = options.localRank;
    this.device = options.device;
  }

  /**
   * Joins the group (rank 0 starts the store at once: a taken port fails here), exchanges NCCL's unique id through
   * the store, and initialises the communicator on cuda:`device`, each step within timeoutMs. Rejects naming the
   * ranks that never joined, or rank 0 when no store answers, or NCCL's reason. `native` is the addon's `nccl`
   * object (a stand-in in tests).
   */
  static async open(options: NcclOptions, native: NcclNative | null = ncclNative().native): Promise<NcclCollective> {
    const status = ncclStatus(native);
    if (!native || !status.available) {
      throw unavailable(`data-parallel training on cuda:${options.device} needs NCCL: ${status.reason}`);
    }
    const heartbeatMs = options.heartbeatMs ?? defaultHeartbeatMs(options.timeoutMs);
    let rendezvous: NcclNativeRendezvous;
    try {
      rendezvous = new native.Rendezvous({
        rank: options.rank, worldSize: options.worldSize, masterAddr: options.masterAddr,
        masterPort: options.masterPort, timeoutMs: options.timeoutMs, heartbeatMs,
      });
    } catch (err) {
      throw asCollectiveError(err);
    }
    try {
      await rendezvous.join();
      const id = await NcclCollective.uniqueId(native, rendezvous, options.rank);
      let comm: NcclNativeComm;
      try {
        comm = await within(native.init(options.rank, options.worldSize, id, options.device, options.timeoutMs), options.timeoutMs);
      } catch (err) {
        const what = `NCCL's initialisation of ${options.worldSize} ranks (rank ${options.rank} on cuda:${options.device})`;
        const found = await rendezvous.fault(what, String((err as Error)?.message ?? err).replace(/^dalle: /, ''), true);
        throw faultError(found, found.kind === 'unknown' ? INIT_HINT : undefined);
      }
      return new NcclCollective(comm, rendezvous, { ...options, heartbeatMs });
    } catch (err) {
      rendezvous.leave().catch(() => undefined);
      throw asCollectiveError(err);
    }
  }

  /** Rank 0 makes the id and publishes it in the store; the others wait for it there. */
  private static async uniqueId(native: NcclNative, rendezvous: NcclNativeRendezvous, rank: number): Promise<Uint8Array> {
    if (rank === 0) {
      let id: Uint8Array;
      try {
        id = native.uniqueId();
      } catch (err) {
        throw unavailable(`rank 0 could not make NCCL's unique id: ${String((err as Error).message).replace(/^dalle: /, '')}`, INIT_HINT);
      }
      await rendezvous.publish(NCCL_UNIQUE_ID_KEY, id);
      return id;
    }
    const id = await rendezvous.wait(NCCL_UNIQUE_ID_KEY);
    if (id.length !== NCCL_UNIQUE_ID_BYTES) {
      throw new CollectiveError(
        `dalle: the store's ${NCCL_UNIQUE_ID_KEY} holds ${id.length} bytes, not NCCL's ${NCCL_UNIQUE_ID_BYTES}`,
        'MASTER_ADDR:MASTER_PORT reaches a store that is not this run\'s rank 0: check MASTER_PORT', undefined, 'usage',
      );
    }
    return id;
  }

  /** An operation's rejection as a CollectiveError: the first failure is diagnosed through the store, once. */
  private async failure(err: unknown): Promise<CollectiveError> {
    const e = err as NativeOpError;
    if (e?.kind === 'closed') return new CollectiveError(e.message, hintFor('closed', undefined), undefined, 'closed');
    if (e?.kind === 'usage' || e?.kind === undefined) return asCollectiveError(err);
    this.diagnosis ??= this.rendezvous
      .fault(e.firstWhat || e.what || 'an operation', e.firstCause || e.cause || e.message, false)
      .then((f) => faultError(f), (storeErr: Error) => faultError({ kind: 'unknown', message: `${e.message} (${storeErr.message})` }))
      .then((found) => (this.diagnosed = found));
    return this.consequence(await this.diagnosis, e.culprit !== false);
  }

  private failureSync(err: unknown): CollectiveError {
    const e = err as NativeOpError;
    if (e?.kind === 'closed') return new CollectiveError(e.message, hintFor('closed', undefined), undefined, 'closed');
    if (e?.kind === 'usage' || e?.kind === undefined) return asCollectiveError(err);
    this.diagnosed ??= faultError(this.rendezvous.faultSync(e.firstWhat || e.what || 'an operation', e.firstCause || e.cause || e.message));
    return this.consequence(this.diagnosed, e.culprit !== false);
  }

  /** The finding for the operation that failed first; for the others, that they could not run because of it. */
  private consequence(found: CollectiveError, culprit: boolean): CollectiveError {
    if (culprit) return found;
    return new CollectiveError(
      `dalle: the group is unusable after an earlier failure: ${found.message.replace(/^dalle: /, '')}`,
      found.hint, found.faultyRank, found.kind,
    );
  }

  private async run(operation: () => Promise<void>): Promise<void> {
    let pending: Promise<void>;
    try {
      pending = operation();
    } catch (err) {
      throw await this.failure(err);
    }
    try {
      await pending;
    } catch (err) {
      throw await this.failure(err);
    }
  }

  async allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void> {
    checkReduceOp(op);
    this.bytesReduced += data.byteLength;
    await this.run(() => this.comm.allReduce(data, op));
  }

  allReduceSync(data: Float32Array | Float64Array, op: ReduceOp): void {
    checkReduceOp(op);
    this.bytesReduced += data.byteLength;
    try {
      this.comm.allReduceSync(data, op);
    } catch (err) {
      throw this.failureSync(err);
    }
  }

  async allReduceBuffers(buffers: readonly DeviceBuffer[], op: ReduceOp): Promise<void> {
    checkReduceOp(op);
    const addresses = buffers.map((b) => b.address);
    const counts = buffers.map((b) => b.count);
    for (const n of counts) this.bytesReduced += 4 * n;
    await this.run(() => this.comm.allReduceBuffers(addresses, counts, op));
  }

  async broadcast(data: Uint8Array, root: number): Promise<void> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new CollectiveError(`dalle: broadcast root ${root} is not a rank of 0 .. ${this.worldSize - 1}`, hintFor('usage', undefined), undefined, 'usage');
    }
    await this.run(() => this.comm.broadcast(data, root));
  }

  /** A one-value all-reduce: it completes on a rank only once every rank has issued it. */
  async barrier(): Promise<void> {
    await this.run(() => this.comm.allReduce(new Float32Array(1), 'sum'));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.comm.close();
    // Rank 0 keeps serving the store (bounded) until the others have left; nobody waits for it here.
    this.rendezvous.leave().catch(() => undefined);
  }
}
