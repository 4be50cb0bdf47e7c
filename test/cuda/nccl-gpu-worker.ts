/**
 * One rank of an NCCL group for test/cuda/nccl-gpu.test.ts (two GPUs: one process per GPU), started as its own node
 * process with RANK, WORLD_SIZE, MASTER_PORT and NCCL_TEST_SCENARIO in the environment; prints one JSON line per result:
 *   reduce   device buffers (sum, three buffers, one a window), a host f64 max, a broadcast from the last rank:
 *            { event: 'reduce', buffers: number[][], host: number[], bytes: number[] }
 *   die      rank 1 exits right after joining; rank 0's next all-reduce fails: { event: 'failed', kind, faultyRank, message, ms }
 * The values are ncclTestValue(rank, buffer, i), so the test computes the expected sums itself.
 */
import { cudaAddon } from '../../src/core/cuda';
import { CollectiveError } from '../../src/core/distributed/collective';
import { NcclCollective } from '../../src/core/distributed/nccl';
import { NCCL_TEST_SIZES, ncclTestValue } from './nccl-gpu-cases';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const say = (event: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ rank, ...event })}\n`);

async function main(): Promise<void> {
  const addon = cudaAddon();
  addon.setDevice(rank);
  const c = await NcclCollective.open({
    rank, worldSize, localRank: rank, masterAddr: '127.0.0.1', masterPort: Number(process.env.MASTER_PORT),
    timeoutMs: Number(process.env.NCCL_TEST_TIMEOUT_MS ?? 20000), device: rank,
  });
  if (process.env.NCCL_TEST_SCENARIO === 'die') {
    if (rank === 1) process.exit(3); // without closing: the store sees its connection lost
    await new Promise((r) => setTimeout(r, 500));
    const started = Date.now();
    try {
      await c.allReduce(new Float32Array(1000), 'sum');
      say({ event: 'reduced' });
    } catch (err) {
      const e = err as CollectiveError;
      say({ event: 'failed', kind: e.kind, faultyRank: e.faultyRank, message: e.message, ms: Date.now() - started });
    }
    c.close();
    return;
  }
  const addresses = NCCL_TEST_SIZES.map((n, b) => {
    const a = addon.alloc(4 * n);
    addon.copyIn(a, Float32Array.from({ length: n }, (_, i) => ncclTestValue(rank, b, i)));
    return a;
  });
  // Buffer 1 only in part: elements 100 .. 1099.
  await c.allReduceBuffers([
    { address: addresses[0], count: NCCL_TEST_SIZES[0] },
    { address: addresses[1] + 4 * 100, count: 1000 },
    { address: addresses[2], count: NCCL_TEST_SIZES[2] },
  ], 'sum');
  const buffers = NCCL_TEST_SIZES.map((n, b) => {
    const out = new Float32Array(n);
    addon.copyOut(out, addresses[b]);
    return Array.from(out);
  });
  const host = Float64Array.from({ length: 5 }, (_, i) => ncclTestValue(rank, 9, i));
  await c.allReduce(host, 'max');
  const bytes = Uint8Array.from({ length: 7 }, (_, i) => rank * 10 + i);
  await c.broadcast(bytes, worldSize - 1);
  await c.barrier();
  say({ event: 'reduce', buffers, host: Array.from(host), bytes: Array.from(bytes) });
  addresses.forEach((a) => addon.free(a));
  c.close();
}

main().catch((err) => {
  say({ event: 'error', message: String((err as Error)?.message ?? err), kind: (err as CollectiveError).kind });
  process.exit(1);
});
