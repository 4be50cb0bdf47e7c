// The NCCL backend on real GPUs (needs a GPU and libnccl.so.2: DALLE_NCCL_LIB, as bench/cuda-check.sh sets it from
// PyTorch's NCCL; skips with the reason elsewhere). One rank (NCCL allows one rank per GPU): device buffers packed,
// reduced and unpacked in order with the compute stream (a kernel issued just before the reduction is seen by it, one
// issued just after runs after the unpacking), a window of a buffer leaving the rest alone, the in-place path of a
// single buffer, host arrays, broadcast, barrier, allReduceSync. With two GPUs, two processes: sums against the
// values each rank started with, and a rank that exits named by the other within the timeout.
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { cudaAddon, cudaStatus } from '../../src/core/cuda';
import { NcclCollective, ncclStatus } from '../../src/core/distributed/nccl';
import { freePort } from '../distributed/gloo-ranks';
import { NCCL_TEST_SIZES, ncclTestValue } from './nccl-gpu-cases';

interface WorkerLine {
  rank: number;
  event: string;
  [field: string]: unknown;
}

/** Runs `worldSize` worker processes (one GPU each) to the end; every JSON line each printed, and its stderr. */
async function runWorkers(worldSize: number, scenario: string, timeoutMs: number): Promise<Array<{ lines: WorkerLine[]; stderr: string; code: number | null }>> {
  const port = await freePort();
  const worker = path.join(__dirname, 'nccl-gpu-worker.js');
  return Promise.all(Array.from({ length: worldSize }, (_, rank) => new Promise<{ lines: WorkerLine[]; stderr: string; code: number | null }>((resolve) => {
    const child = spawn(process.execPath, [worker], {
      env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(worldSize), MASTER_PORT: String(port), NCCL_TEST_SCENARIO: scenario, NCCL_TEST_TIMEOUT_MS: String(timeoutMs) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const kill = setTimeout(() => child.kill('SIGKILL'), 3 * timeoutMs + 30000);
    child.on('close', (code) => {
      clearTimeout(kill);
      const lines = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as WorkerLine);
      resolve({ lines, stderr: err, code });
    });
  })));
}

describe('NCCL collective on GPUs (needs a GPU and NCCL)', function () {
  this.timeout(120000);
  let c: NcclCollective;

  before(async function () {
    const s = ncclStatus();
    if (!s.available) {
      console.log(`      (skipped: ${s.reason})`);
      this.skip();
    }
    console.log(`      (NCCL ${s.version} from ${s.library})`);
    cudaAddon().setDevice(0);
    c = await NcclCollective.open({
      rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: await freePort(), timeoutMs: 30000, device: 0,
    });
  });
  after(() => c?.close());

  const upload = (values: Float32Array): number => {
    const a = cudaAddon().alloc(4 * values.length);
    cudaAddon().copyIn(a, values);
    return a;
  };
  const download = (address: number, n: number): Float32Array => {
    const out = new Float32Array(n);
    cudaAddon().copyOut(out, address);
    return out;
  };
  const values = (buffer: number, n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => ncclTestValue(0, buffer, i));

  it('one rank: buffers packed into a bucket, ordered after the kernels before and before the kernels after', async () => {
    const addon = cudaAddon();
    const [nA, nB, nC] = NCCL_TEST_SIZES;
    const a = upload(values(0, nA));
    const b = upload(values(1, nB));
    const big = upload(values(2, nC));
    const single = upload(Float32Array.of(42.5));
    for (const op of ['sum', 'max', 'min'] as const) {
      addon.copyIn(a, values(0, nA));
      addon.copyIn(big, values(2, nC));
      addon.scale(nA, 3, a); // on the compute stream, just before: the packed values are 3x
      const pending = c.allReduceBuffers([
        { address: a, count: nA }, { address: b + 4 * 100, count: 1000 }, { address: 0, count: 0 },
        { address: big, count: nC }, { address: single, count: 1 },
      ], op);
      addon.scale(nC, 2, big); // just after: must run after the unpacking, or the unpacking overwrites it
      await pending;
      assert.deepEqual(download(a, nA), values(0, nA).map((v) => Math.fround(3 * v)), `${op}: buffer 0`);
      assert.deepEqual(download(b, nB), values(1, nB), `${op}: the window and the rest of buffer 1`);
      assert.deepEqual(download(big, nC), values(2, nC).map((v) => Math.fround(2 * v)), `${op}: the large buffer, scaled after`);
      assert.deepEqual(download(single, 1), Float32Array.of(42.5));
    }
    // One buffer: reduced in place (no bucket).
    addon.copyIn(big, values(2, nC));
    await c.allReduceBuffers([{ address: big, count: nC }], 'sum');
    assert.deepEqual(download(big, nC), values(2, nC));
    [a, b, big, single].forEach((p) => addon.free(p));
  });

  it('one rank: host arrays, broadcast, barrier and allReduceSync', async () => {
    const f32 = Float32Array.of(1.5, -2, 3);
    const f64 = Float64Array.of(Math.PI, -1e300, 5e-324);
    await Promise.all([c.allReduce(f32, 'sum'), c.allReduce(f64, 'max')]);
    assert.deepEqual(Array.from(f32), [1.5, -2, 3]);
    assert.deepEqual(Array.from(f64), [Math.PI, -1e300, 5e-324]);
    const bytes = Uint8Array.from({ length: 300 }, (_, i) => i & 255);
    await c.broadcast(bytes, 0);
    assert.deepEqual(bytes, Uint8Array.from({ length: 300 }, (_, i) => i & 255));
    await c.barrier();
    const sync = Float64Array.of(7, 8);
    c.allReduceSync(sync, 'min');
    assert.deepEqual(Array.from(sync), [7, 8]);
    await c.allReduce(new Float32Array(0), 'sum');
  });

  it('two GPUs, two processes: device buffers summed, host maxima, a broadcast', async function () {
    if (cudaStatus().devices.length < 2) {
      console.log('      (skipped: one GPU; NCCL runs one rank per GPU)');
      this.skip();
    }
    const results = await runWorkers(2, 'reduce', 30000);
    for (const r of results) assert.equal(r.code, 0, `a worker failed: ${JSON.stringify(r.lines)} ${r.stderr}`);
    const sum = (b: number, i: number): number => Math.fround(ncclTestValue(0, b, i) + ncclTestValue(1, b, i));
    for (const { lines } of results) {
      const got = lines.find((l) => l.event === 'reduce')!;
      const buffers = got.buffers as number[][];
      assert.deepEqual(buffers[0], Array.from({ length: NCCL_TEST_SIZES[0] }, (_, i) => sum(0, i)));
      const own = got.rank as number;
      assert.deepEqual(buffers[1], Array.from({ length: NCCL_TEST_SIZES[1] }, (_, i) => (i >= 100 && i < 1100 ? sum(1, i) : ncclTestValue(own, 1, i))));
      assert.deepEqual(buffers[2], Array.from({ length: NCCL_TEST_SIZES[2] }, (_, i) => sum(2, i)));
      assert.deepEqual(got.host, Array.from({ length: 5 }, (_, i) => Math.max(ncclTestValue(0, 9, i), ncclTestValue(1, 9, i))));
      assert.deepEqual(got.bytes, Array.from({ length: 7 }, (_, i) => 10 + i));
    }
  });

  it('two GPUs: a rank that exits is named by the other within the timeout', async function () {
    if (cudaStatus().devices.length < 2) this.skip();
    const results = await runWorkers(2, 'die', 8000);
    const failed = results[0].lines.find((l) => l.event === 'failed');
    assert.ok(failed, `rank 0 did not fail: ${JSON.stringify(results[0].lines)} ${results[0].stderr}`);
    assert.equal(failed.faultyRank, 1);
    assert.ok(['exited', 'left'].includes(failed.kind as string), String(failed.message));
    assert.ok((failed.ms as number) < 8000 + 5000, `named after ${failed.ms} ms`);
  });
});
