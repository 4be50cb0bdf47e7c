/**
 * N data-parallel ranks in one process, for tests of code above the collective: rank k's operations wait until every
 * rank has issued its k-th operation, then all complete with the reduction (sum, max, min) or the root's broadcast.
 * Only the asynchronous operations: a blocking one (allReduceSync) cannot wait for ranks run by the same thread.
 */
import { Collective, DeviceBuffer, ReduceOp } from '../../src/core/distributed/collective';

type Pending = { data: Float32Array | Float64Array | Uint8Array; op: ReduceOp | { root: number }; resolve: () => void };

export function inProcessRanks(worldSize: number): Collective[] {
  const queues: Pending[][] = Array.from({ length: worldSize }, () => []);
  const settle = (): void => {
    while (queues.every((q) => q.length > 0)) {
      const ops = queues.map((q) => q.shift() as Pending);
      const first = ops[0];
      if (ops.some((p) => p.data.length !== first.data.length)) throw new Error('in-process ranks: operations of different lengths');
      const out = Float64Array.from(first.data as ArrayLike<number>);
      if (typeof first.op === 'object') {
        out.set(ops[first.op.root].data as ArrayLike<number>);
      } else {
        for (const p of ops.slice(1)) {
          for (let i = 0; i < out.length; i++) {
            const v = p.data[i];
            out[i] = first.op === 'sum' ? out[i] + v : first.op === 'max' ? Math.max(out[i], v) : Math.min(out[i], v);
          }
        }
      }
      for (const p of ops) {
        p.data.set(out as unknown as ArrayLike<number>);
        p.resolve();
      }
    }
  };
  return Array.from({ length: worldSize }, (_, rank): Collective => {
    const issue = (data: Pending['data'], op: Pending['op']): Promise<void> =>
      new Promise((resolve) => {
        queues[rank].push({ data, op, resolve });
        settle();
      });
    let bytes = 0;
    return {
      backend: 'single',
      rank,
      worldSize,
      localRank: rank,
      get bytesReduced() {
        return bytes;
      },
      allReduce: (data, op) => {
        bytes += data.byteLength;
        return issue(data, op);
      },
      allReduceSync: () => {
        throw new Error('in-process ranks: a blocking all-reduce would wait forever for the other ranks');
      },
      allReduceBuffers: (_buffers: readonly DeviceBuffer[]) => {
        throw new Error('in-process ranks: device buffers are not simulated');
      },
      broadcast: (data, root) => issue(data, { root }),
      barrier: () => issue(new Uint8Array(0), 'sum'),
      close: () => undefined,
    };
  });
}
