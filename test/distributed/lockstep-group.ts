// N data-parallel ranks in one process, for tests: each rank is a Collective, and the k-th operation of every rank
// completes once all N have issued their k-th (a barrier per operation), so N instances driven with
// Promise.all(ranks.map(step)) run in lockstep and cannot deadlock. Reductions are computed in float64 over the ranks
// in rank order, then written back (f32) to every rank's buffers. Operations that differ between ranks (kind, op,
// buffer sizes) reject on every rank, naming the operation.
import { Backend, cpuBackend } from '../../src/core/backend';
import { Collective, CollectiveError, DeviceBuffer, ReduceOp } from '../../src/core/distributed/collective';

type Issued =
  | { kind: 'buffers'; buffers: readonly DeviceBuffer[]; op: ReduceOp }
  | { kind: 'host'; data: Float32Array | Float64Array; op: ReduceOp }
  | { kind: 'barrier' };

interface Pending {
  readonly issued: Array<Issued | undefined>;
  readonly settle: Array<{ resolve: () => void; reject: (e: Error) => void } | undefined>;
  arrived: number;
}

const combine: Record<ReduceOp, (a: number, b: number) => number> = {
  sum: (a, b) => a + b,
  max: Math.max,
  min: Math.min,
};

export class LockstepGroup {
  readonly ranks: LockstepRank[];
  /** Operations completed by the whole group. */
  completed = 0;
  private readonly pending = new Map<number, Pending>();

  /** `backend` holds the device buffers the ranks reduce (the CPU, or a stand-in device). */
  constructor(readonly worldSize: number, private readonly backend: Backend = cpuBackend) {
    this.ranks = Array.from({ length: worldSize }, (_, rank) => new LockstepRank(this, rank));
  }

  /** Called by rank `rank` for its operation number `index`. */
  issue(rank: number, index: number, issued: Issued): Promise<void> {
    let p = this.pending.get(index);
    if (!p) {
      p = { issued: new Array(this.worldSize).fill(undefined), settle: new Array(this.worldSize).fill(undefined), arrived: 0 };
      this.pending.set(index, p);
    }
    const entry = p;
    const done = new Promise<void>((resolve, reject) => {
      entry.issued[rank] = issued;
      entry.settle[rank] = { resolve, reject };
    });
    entry.arrived++;
    if (entry.arrived === this.worldSize) {
      this.pending.delete(index);
      try {
        this.complete(index, entry.issued as Issued[]);
        this.completed++;
        for (const s of entry.settle) s!.resolve();
      } catch (err) {
        for (const s of entry.settle) s!.reject(err as Error);
      }
    }
    return done;
  }

  private complete(index: number, issued: Issued[]): void {
    const first = issued[0];
    const describe = (x: Issued): string =>
      x.kind === 'barrier' ? 'barrier' : x.kind === 'host' ? `allReduce(${x.data.length}, ${x.op})`
        : `allReduceBuffers([${x.buffers.map((b) => b.count).join(', ')}], ${x.op})`;
    for (const x of issued) {
      if (describe(x) !== describe(first)) {
        throw new CollectiveError(`lockstep: operation ${index} differs between ranks: ${issued.map(describe).join(' vs ')}`,
          'every rank must issue the same operations in the same order');
      }
    }
    if (first.kind === 'barrier') return;
    const reduce = combine[first.op];
    if (first.kind === 'host') {
      const hosts = issued as Array<Extract<Issued, { kind: 'host' }>>;
      const out = Float64Array.from(hosts[0].data);
      for (const h of hosts.slice(1)) for (let i = 0; i < out.length; i++) out[i] = reduce(out[i], h.data[i]);
      for (const h of hosts) h.data.set(out);
      return;
    }
    const lists = issued as Array<Extract<Issued, { kind: 'buffers' }>>;
    first.buffers.forEach((b, j) => {
      const values = lists.map((l) => {
        const host = new Float32Array(l.buffers[j].count);
        if (host.length > 0) this.backend.copyOut(l.buffers[j].address, host);
        return host;
      });
      const out = new Float32Array(b.count);
      for (let i = 0; i < out.length; i++) {
        let acc = values[0][i];
        for (let k = 1; k < values.length; k++) acc = reduce(acc, values[k][i]);
        out[i] = acc;
      }
      if (out.length > 0) for (const l of lists) this.backend.copyIn(l.buffers[j].address, out);
    });
  }
}

export class LockstepRank implements Collective {
  readonly backend = 'gloo' as const; // host-memory reductions, as Gloo's
  readonly localRank: number;
  bytesReduced = 0;
  private issuedCount = 0;

  constructor(private readonly group: LockstepGroup, readonly rank: number) {
    this.localRank = rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void> {
    this.bytesReduced += data.byteLength;
    return this.group.issue(this.rank, this.issuedCount++, { kind: 'host', data, op });
  }

  allReduceSync(): void {
    throw new Error('lockstep: allReduceSync would wait for ranks that run on this same thread');
  }

  allReduceBuffers(buffers: readonly DeviceBuffer[], op: ReduceOp): Promise<void> {
    for (const b of buffers) this.bytesReduced += 4 * b.count;
    return this.group.issue(this.rank, this.issuedCount++, { kind: 'buffers', buffers, op });
  }

  async broadcast(): Promise<void> {
    throw new Error('lockstep: broadcast is not simulated');
  }

  barrier(): Promise<void> {
    return this.group.issue(this.rank, this.issuedCount++, { kind: 'barrier' });
  }

  close(): void {}
}
