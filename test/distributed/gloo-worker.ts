/**
 * One rank of a Gloo group for test/distributed/gloo.test.ts, started as its own node process:
 *
 *   node gloo-worker.js SCENARIO...    with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, DALLE_TEST_TIMEOUT_MS,
 *                                      DALLE_TEST_SEED and DALLE_TEST_OUT (a folder) in the environment
 *
 * Scenarios run in the order given, on one group: reduce, buffers, broadcast, barrier, order (see each function),
 * then `loop`: all-reduces every 20 ms until one fails. Each result is one JSON line on stdout ({ event, ... });
 * rank 0 writes the large results to DALLE_TEST_OUT, every rank reports the SHA-256 of its own, so the test checks
 * rank 0's values against the reference and every other rank's against rank 0's. A failure (joining or an operation)
 * prints { event: 'failed', message, kind, faultyRank, at } and exits 1.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Collective, CollectiveError } from '../../src/core/distributed/collective';
import { openCollective } from '../../src/core/distributed/open';
import { Tensor } from '../../src/core/tensor';
import {
  BROADCAST_BYTES, BUFFER_SIZES, BUFFER_WINDOW, REDUCE_CASES, rankBytes, rankIntegers, rankValues,
} from './gloo-cases';

const rank = Number(process.env.RANK);
const worldSize = Number(process.env.WORLD_SIZE);
const seed = Number(process.env.DALLE_TEST_SEED);
const outDir = process.env.DALLE_TEST_OUT ?? '';

function say(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ rank, ...event })}\n`);
}

function sha(view: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(view.buffer, view.byteOffset, view.byteLength)).digest('hex');
}

function keep(name: string, view: ArrayBufferView): void {
  if (rank === 0) fs.writeFileSync(path.join(outDir, name), new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
}

/** Every case of REDUCE_CASES issued at once (all in flight together), then awaited. */
async function reduce(c: Collective): Promise<void> {
  const arrays = REDUCE_CASES.map((k) => rankValues(seed, rank, k.index, k.size, k.dtype));
  await Promise.all(REDUCE_CASES.map((k, i) => c.allReduce(arrays[i], k.op)));
  REDUCE_CASES.forEach((k, i) => keep(`reduce-${k.index}.bin`, arrays[i]));
  say({ event: 'reduce', sha: arrays.map(sha) });
}

/** Two buckets of tensors (sum, then max), one bucket a window inside a larger tensor. */
async function buffers(c: Collective): Promise<void> {
  const tensors = BUFFER_SIZES.map((n, i) => Tensor.from(rankValues(seed, rank, 100 + i, n, 'f32') as Float32Array, [n]));
  const all = tensors.map((t, i) => (i === BUFFER_WINDOW.tensor
    ? { address: t.address + 4 * BUFFER_WINDOW.start, count: BUFFER_WINDOW.count }
    : { address: t.address, count: t.size }));
  const sumPart = all.filter((_, i) => i % 2 === 0);
  const maxPart = all.filter((_, i) => i % 2 === 1);
  await Promise.all([c.allReduceBuffers(sumPart, 'sum'), c.allReduceBuffers(maxPart, 'max')]);
  const results = tensors.map((t) => t.toHost() as Float32Array);
  results.forEach((r, i) => keep(`buffers-${i}.bin`, r));
  // The window's tensor differs between ranks outside the window (each rank's own values): only the window is shared.
  const { tensor, start, count } = BUFFER_WINDOW;
  const shared = results.map((r, i) => (i === tensor ? r.subarray(start, start + count) : r));
  say({ event: 'buffers', sha: shared.map(sha), bytesReduced: c.bytesReduced });
  tensors.forEach((t) => t.dispose());
}

/** The last rank's bytes to everyone, then rank 0's. */
async function broadcast(c: Collective): Promise<void> {
  const fromLast = rankBytes(seed, rank, 200, BROADCAST_BYTES);
  const fromFirst = rankBytes(seed, rank, 201, 3);
  await Promise.all([c.broadcast(fromLast, worldSize - 1), c.broadcast(fromFirst, 0)]);
  say({ event: 'broadcast', sha: [sha(fromLast), sha(fromFirst)] });
}

/** Rank r arrives after r x 150 ms; nobody may leave before the last has arrived. */
async function barrier(c: Collective): Promise<void> {
  await new Promise((r) => setTimeout(r, rank * 150));
  const arrived = Date.now();
  await c.barrier();
  say({ event: 'barrier', arrived, left: Date.now() });
}

/**
 * max, then sum, then a blocking sum on the same array, issued without waiting: in issue order the result is
 * W x W x max; any other order gives another value. The Promises must settle in issue order too.
 */
async function order(c: Collective): Promise<void> {
  const x = rankIntegers(seed, rank, 300, 5);
  const settled: string[] = [];
  const first = c.allReduce(x, 'max').then(() => settled.push('max'));
  const bytes = rankBytes(seed, rank, 301, 16);
  const second = c.broadcast(bytes, 0).then(() => settled.push('broadcast'));
  const third = c.allReduce(x, 'sum').then(() => settled.push('sum'));
  c.allReduceSync(x, 'sum');
  const afterSync = Array.from(x);
  await Promise.all([first, second, third]);
  say({ event: 'order', values: afterSync, settled, bytes: sha(bytes) });
}

/** All-reduces until one fails (a rank is killed or stopped meanwhile); `ready` after the first. */
async function loop(c: Collective): Promise<void> {
  const x = new Float32Array(1000).fill(1);
  await c.allReduce(x, 'sum');
  say({ event: 'ready', pid: process.pid });
  for (;;) {
    await c.allReduce(x.fill(1), 'sum');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SCENARIOS: Record<string, (c: Collective) => Promise<void>> = { reduce, buffers, broadcast, barrier, order, loop };

async function main(): Promise<void> {
  const started = Date.now();
  let c: Collective | undefined;
  try {
    c = await openCollective({
      rank, worldSize, localRank: rank, device: 'cpu',
      masterAddr: process.env.MASTER_ADDR ?? '127.0.0.1',
      masterPort: Number(process.env.MASTER_PORT),
      timeoutMs: Number(process.env.DALLE_TEST_TIMEOUT_MS),
    });
    say({ event: 'joined', ms: Date.now() - started });
    for (const name of process.argv.slice(2)) await SCENARIOS[name](c);
    await c.barrier();
    c.close();
    say({ event: 'done' });
  } catch (err) {
    const e = err as CollectiveError;
    say({ event: 'failed', name: e.name, message: e.message, hint: e.hint, kind: e.kind, faultyRank: e.faultyRank, at: Date.now(), ms: Date.now() - started });
    c?.close();
    process.exit(1);
  }
}

void main();
