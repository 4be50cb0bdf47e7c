// A stand-in for the CUDA addon's NCCL functions (native/cuda/nccl_napi.cc) for ranks in one process, around the
// addon's real Rendezvous (the store): init records the unique id each rank was given; host reductions and broadcasts
// are computed here once every rank has issued the same operation; device-buffer reductions record their arguments;
// an operation that the other ranks do not join within `opTimeoutMs` fails as the native watchdog fails it (kind
// timeout, then every later operation refused as a consequence), so NcclCollective's naming of faults can be checked
// without a GPU.
import type { NcclNative, NcclNativeComm } from '../../src/core/distributed/nccl';
import type { ReduceOp } from '../../src/core/distributed/collective';

interface Arrival {
  rank: number;
  data?: Float32Array | Float64Array | Uint8Array;
  resolve: () => void;
}

interface Issued {
  key: string;
  arrivals: Arrival[];
}

export class FakeNcclWorld {
  /** The id each rank's init received. */
  readonly ids: Uint8Array[] = [];
  /** allReduceBuffers' arguments, per rank. */
  readonly bufferCalls: Array<Array<{ addresses: number[]; counts: number[]; op: ReduceOp }>> = [];
  /** Ranks whose init rejects (NCCL's words). */
  readonly failInit = new Map<number, string>();
  /** What rank 0's uniqueId returns (default: 128 random bytes). */
  uniqueId = (): Uint8Array => Uint8Array.from({ length: 128 }, () => Math.floor(Math.random() * 256));
  private readonly issued: Issued[] = [];

  constructor(readonly worldSize: number, readonly opTimeoutMs: number) {}

  /** The addon's nccl object with this world's communicators and the real `Rendezvous`. */
  native(real: NcclNative): NcclNative {
    return {
      available: () => ({ ok: true, library: 'fake-libnccl.so.2', version: '2.99.0', versionCode: 29900, deviceCount: 1, reason: '' }),
      uniqueId: () => this.uniqueId(),
      init: async (rank: number, worldSize: number, id: Uint8Array) => {
        if (worldSize !== this.worldSize) throw new Error(`fake NCCL: world size ${worldSize}, expected ${this.worldSize}`);
        this.ids[rank] = Uint8Array.from(id);
        const why = this.failInit.get(rank);
        if (why) throw Object.assign(new Error(`dalle: ${why}`), { kind: 'nccl' });
        return new FakeComm(this, rank);
      },
      Rendezvous: real.Rendezvous,
    };
  }

  /** Rank `rank`'s `index`-th operation: settles when every rank has issued it (then reduces), or never. */
  arrive(index: number, key: string, arrival: Arrival, reduce: (arrivals: Arrival[]) => void): void {
    const slot = (this.issued[index] ??= { key, arrivals: [] });
    if (slot.key !== key) throw new Error(`fake NCCL: operation ${index} is ${slot.key} on one rank and ${key} on another`);
    slot.arrivals.push(arrival);
    if (slot.arrivals.length === this.worldSize) {
      reduce(slot.arrivals);
      for (const a of slot.arrivals) a.resolve();
    }
  }
}

class FakeComm implements NcclNativeComm {
  private index = 0;
  private first?: { what: string; cause: string };
  private closed = false;

  constructor(private readonly world: FakeNcclWorld, private readonly rank: number) {}

  private operation(what: string, key: string, data: Arrival['data'], reduce: (arrivals: Arrival[]) => void): Promise<void> {
    const index = this.index++;
    const fail = (kind: string, cause: string, culprit: boolean): Error => Object.assign(new Error(`dalle: ${what} failed: ${cause}`), {
      kind, what, cause, culprit, firstWhat: this.first?.what ?? what, firstCause: this.first?.cause ?? cause,
    });
    if (this.closed) return Promise.reject(fail('closed', 'the collective was closed', true));
    if (this.first) return Promise.reject(fail('timeout', `the communicator is unusable after an earlier failure: ${this.first.what} failed: ${this.first.cause}`, false));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The first operation to time out is the cause; the watchdog fails every other pending one with it.
        const culprit = !this.first;
        if (culprit) this.first = { what, cause: `it did not complete within ${(this.world.opTimeoutMs / 1000).toFixed(1)} s` };
        const first = this.first!;
        reject(fail('timeout', culprit ? first.cause : `not completed: the communicator is unusable after an earlier failure: ${first.what} failed: ${first.cause}`, culprit));
      }, this.world.opTimeoutMs);
      this.world.arrive(index, key, { rank: this.rank, data, resolve: () => (clearTimeout(timer), resolve()) }, reduce);
    });
  }

  allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void> {
    const what = `allReduce #${this.index + 1} (${op}, ${data.length} ${data instanceof Float64Array ? 'f64' : 'f32'})`;
    return this.operation(what, `allReduce ${op} ${data.length}`, data, (arrivals) => {
      const arrays = arrivals.map((a) => a.data as Float32Array | Float64Array);
      for (let i = 0; i < data.length; i++) {
        const values = arrays.map((a) => a[i]);
        const r = op === 'sum' ? values.reduce((s, v) => s + v, 0) : op === 'max' ? Math.max(...values) : Math.min(...values);
        for (const a of arrays) a[i] = r;
      }
    });
  }

  /** The other ranks run on this thread, so they can never join: fails as the watchdog would after its timeout. */
  allReduceSync(data: Float32Array | Float64Array, op: ReduceOp): void {
    const what = `allReduce #${++this.index} (${op}, ${data.length} ${data instanceof Float64Array ? 'f64' : 'f32'})`;
    const cause = this.first
      ? `the communicator is unusable after an earlier failure: ${this.first.what} failed: ${this.first.cause}`
      : `it did not complete within ${(this.world.opTimeoutMs / 1000).toFixed(1)} s`;
    const culprit = !this.first;
    this.first ??= { what, cause };
    throw Object.assign(new Error(`dalle: ${what} failed: ${cause}`), {
      kind: 'timeout', what, cause, culprit, firstWhat: this.first.what, firstCause: this.first.cause,
    });
  }

  allReduceBuffers(addresses: number[], counts: number[], op: ReduceOp): Promise<void> {
    (this.world.bufferCalls[this.rank] ??= []).push({ addresses, counts, op });
    const total = counts.reduce((s, n) => s + n, 0);
    return this.operation(`allReduceBuffers #${this.index + 1} (${op}, ${counts.length} buffers, ${total} f32)`,
      `buffers ${op} ${counts.join(',')}`, undefined, () => undefined);
  }

  broadcast(data: Uint8Array, root: number): Promise<void> {
    return this.operation(`broadcast #${this.index + 1} (${data.length} bytes from rank ${root})`, `broadcast ${root} ${data.length}`, data, (arrivals) => {
      const from = arrivals.find((a) => a.rank === root)!.data as Uint8Array;
      for (const a of arrivals) (a.data as Uint8Array).set(from);
    });
  }

  close(): void {
    this.closed = true;
  }
}
