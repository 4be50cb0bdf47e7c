/**
 * The Gloo collective (native/collective, src/core/distributed/gloo.ts) across real processes: 2, 3 and 4 ranks on
 * 127.0.0.1, each a node process running gloo-worker.js, against float64 references the test computes from each
 * rank's seeded data; then the faults: a rank that never joins, one killed (SIGKILL) or stopped (SIGSTOP) mid-run,
 * rank 0 killed. Skipped, with the reason, where the addon is not built.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { glooStatus } from '../../src/core/distributed/gloo';
import { TEST_SEED } from '../harness/random';
import {
  BROADCAST_BYTES, BUFFER_SIZES, BUFFER_WINDOW, CaseOp, REDUCE_CASES, rankBytes, rankIntegers, rankValues,
} from './gloo-cases';
import { endRanks, freePort, RankProcess, startRanks, WorkerEvent } from './gloo-ranks';

const seed = TEST_SEED;

function skipWithoutGloo(ctx: Mocha.Context): void {
  const status = glooStatus();
  if (!status.available) {
    console.log(`      skipped: ${status.reason}`);
    ctx.skip();
  }
}

function sha(view: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(view.buffer, view.byteOffset, view.byteLength)).digest('hex');
}

function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function readF64(file: string): Float64Array {
  const b = fs.readFileSync(file);
  return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/**
 * `got` against the float64 reduction of `inputs`: max and min exactly; sums within the rounding of W additions in
 * the result's precision (relative to the sum of magnitudes, since the ring adds in another order than the reference).
 */
function checkReduction(what: string, got: Float32Array | Float64Array, inputs: ArrayLike<number>[], op: CaseOp, eps: number): void {
  assert.equal(got.length, inputs[0].length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    let want = inputs[0][i];
    let magnitude = Math.abs(want);
    for (let r = 1; r < inputs.length; r++) {
      const v = inputs[r][i];
      want = op === 'sum' ? want + v : op === 'max' ? Math.max(want, v) : Math.min(want, v);
      magnitude += Math.abs(v);
    }
    const tolerance = op === 'sum' ? 2 * inputs.length * eps * magnitude : 0;
    if (!(Math.abs(got[i] - want) <= tolerance)) {
      assert.fail(`${what}: element ${i} is ${got[i]}, the float64 reference ${want} (tolerance ${tolerance}; seed ${seed})`);
    }
  }
}

const F32_EPS = 2 ** -24;
const F64_EPS = 2 ** -53;

function eventsOf(ranks: readonly RankProcess[], event: string): WorkerEvent[] {
  return ranks.map((r) => {
    const e = r.events.find((x) => x.event === event);
    assert.ok(e, `rank ${r.rank} printed no '${event}' (seed ${seed}); its events: ${JSON.stringify(r.events)}; stderr: ${r.stderr.join('')}`);
    return e;
  });
}

for (const worldSize of [2, 3, 4]) {
  describe(`distributed: Gloo with ${worldSize} processes`, function () {
    this.timeout(20000);
    let ranks: RankProcess[] = [];
    let outDir = '';

    before(async function () {
      skipWithoutGloo(this);
      outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-gloo-'));
      ranks = startRanks({
        worldSize, scenarios: ['reduce', 'buffers', 'broadcast', 'barrier', 'order'], port: await freePort(),
        timeoutMs: 5000, seed, outDir,
      });
      await Promise.all(ranks.map((r) => r.next('done', 15000)));
      assert.deepEqual(await Promise.all(ranks.map((r) => r.exited)), ranks.map(() => 0));
    });

    after(async () => {
      await endRanks(ranks);
      if (outDir) fs.rmSync(outDir, { recursive: true, force: true });
    });

    it('allReduce: sum, max and min of f32 and f64 arrays of 1, 7 and 1000003 values, all in flight at once, match a float64 reference on every rank', () => {
      const reported = eventsOf(ranks, 'reduce');
      for (const k of REDUCE_CASES) {
        const what = `allReduce ${k.op} of ${k.size} ${k.dtype}`;
        const got = k.dtype === 'f32' ? readF32(path.join(outDir, `reduce-${k.index}.bin`)) : readF64(path.join(outDir, `reduce-${k.index}.bin`));
        const inputs = ranks.map((r) => rankValues(seed, r.rank, k.index, k.size, k.dtype));
        checkReduction(what, got, inputs, k.op, k.dtype === 'f32' ? F32_EPS : F64_EPS);
        // The same bits on every rank: data-parallel replicas must not drift apart.
        for (const e of reported) assert.equal((e.sha as string[])[k.index], sha(got), `${what}: rank ${e.rank} differs from rank 0`);
      }
    });

    it('allReduceBuffers: tensor storages packed into one bucket, reduced and unpacked; a window reduces only its elements', () => {
      const reported = eventsOf(ranks, 'buffers');
      BUFFER_SIZES.forEach((n, i) => {
        const got = readF32(path.join(outDir, `buffers-${i}.bin`));
        const inputs = ranks.map((r) => rankValues(seed, r.rank, 100 + i, n, 'f32'));
        const op: CaseOp = i % 2 === 0 ? 'sum' : 'max';
        if (i === BUFFER_WINDOW.tensor) {
          const { start, count } = BUFFER_WINDOW;
          checkReduction(`buffer ${i} window`, got.subarray(start, start + count), inputs.map((x) => x.subarray(start, start + count)), op, F32_EPS);
          // Outside the window: rank 0's own values, untouched.
          assert.deepEqual(Array.from(got.subarray(0, start)), Array.from(inputs[0].subarray(0, start)));
          assert.deepEqual(Array.from(got.subarray(start + count)), Array.from(inputs[0].subarray(start + count)));
        } else {
          checkReduction(`buffer ${i} (${n} f32, ${op})`, got, inputs, op, F32_EPS);
        }
        const shared = i === BUFFER_WINDOW.tensor ? got.subarray(BUFFER_WINDOW.start, BUFFER_WINDOW.start + BUFFER_WINDOW.count) : got;
        for (const e of reported) assert.equal((e.sha as string[])[i], sha(shared), `buffer ${i}: rank ${e.rank} differs from rank 0`);
      });
      const counted = BUFFER_SIZES.reduce((s, n, i) => s + (i === BUFFER_WINDOW.tensor ? BUFFER_WINDOW.count : n), 0);
      for (const e of reported) assert.equal(e.bytesReduced, 4 * counted + REDUCE_CASES.reduce((s, k) => s + k.size * (k.dtype === 'f32' ? 4 : 8), 0));
    });

    it("broadcast: every rank ends with the root's bytes (the last rank's, then rank 0's)", () => {
      const wantLast = sha(rankBytes(seed, worldSize - 1, 200, BROADCAST_BYTES));
      const wantFirst = sha(rankBytes(seed, 0, 201, 3));
      for (const e of eventsOf(ranks, 'broadcast')) assert.deepEqual(e.sha, [wantLast, wantFirst], `rank ${e.rank}`);
    });

    it('barrier: no rank leaves before the last one arrives', () => {
      const events = eventsOf(ranks, 'barrier');
      const lastArrival = Math.max(...events.map((e) => e.arrived as number));
      for (const e of events) assert.ok((e.left as number) >= lastArrival, `rank ${e.rank} left at ${e.left}, before the last arrival at ${lastArrival}`);
      assert.ok(lastArrival - Math.min(...events.map((e) => e.arrived as number)) >= 100 * (worldSize - 1), 'the arrivals were staggered');
    });

    it('operations run and settle in issue order: max, broadcast, sum, then a blocking sum on the same array', () => {
      const inputs = ranks.map((r) => rankIntegers(seed, r.rank, 300, 5));
      const want = inputs[0].map((_, i) => worldSize * worldSize * Math.max(...inputs.map((x) => x[i])));
      const wantBytes = sha(rankBytes(seed, 0, 301, 16));
      for (const e of eventsOf(ranks, 'order')) {
        assert.deepEqual(e.values, Array.from(want), `rank ${e.rank}: values after the blocking sum (seed ${seed})`);
        assert.deepEqual(e.settled, ['max', 'broadcast', 'sum'], `rank ${e.rank}: settle order`);
        assert.equal(e.bytes, wantBytes);
      }
    });
  });
}

describe('distributed: Gloo faults name the rank at fault', function () {
  this.timeout(20000);
  const timeoutMs = 3000;
  let ranks: RankProcess[] = [];

  beforeEach(function () {
    skipWithoutGloo(this);
  });

  afterEach(async () => {
    await endRanks(ranks);
    ranks = [];
  });

  async function failures(of: readonly RankProcess[], within: number): Promise<WorkerEvent[]> {
    return Promise.all(of.map((r) => r.next('failed', within)));
  }

  it('ranks that never join: every other rank fails after the timeout, naming them', async () => {
    const started = Date.now();
    ranks = startRanks({ worldSize: 4, ranks: [0, 2], scenarios: ['loop'], port: await freePort(), timeoutMs, seed, outDir: '' });
    for (const f of await failures(ranks, timeoutMs + 5000)) {
      assert.equal(f.kind, 'never-joined', String(f.message));
      assert.equal(f.faultyRank, 1);
      assert.match(String(f.message), /ranks 1 and 3 never joined within 3\.0 s \(world size 4\)/);
      assert.ok((f.ms as number) >= timeoutMs - 100 && (f.ms as number) < timeoutMs + 2500, `failed after ${f.ms} ms`);
    }
    assert.ok(Date.now() - started < timeoutMs + 5000);
  });

  it('rank 0 never starts: the others fail after the timeout, naming rank 0 (no store answers)', async () => {
    ranks = startRanks({ worldSize: 3, ranks: [1, 2], scenarios: ['loop'], port: await freePort(), timeoutMs, seed, outDir: '' });
    for (const f of await failures(ranks, timeoutMs + 5000)) {
      assert.equal(f.kind, 'store-gone', String(f.message));
      assert.equal(f.faultyRank, 0);
      assert.match(String(f.message), /no store answered at 127\.0\.0\.1:\d+ within 3\.0 s/);
    }
  });

  for (const killed of [2, 0]) {
    it(`a rank killed mid-run (SIGKILL, rank ${killed}): the others fail within the timeout, naming it`, async () => {
      ranks = startRanks({ worldSize: 3, scenarios: ['loop'], port: await freePort(), timeoutMs, seed, outDir: '' });
      const ready = await Promise.all(ranks.map((r) => r.next('ready', 8000)));
      const victim = ranks[killed];
      const killedAt = Date.now();
      victim.child.kill('SIGKILL');
      const others = ranks.filter((r) => r !== victim);
      for (const f of await failures(others, timeoutMs + 3000)) {
        assert.equal(f.faultyRank, killed, String(f.message));
        assert.ok((f.at as number) - killedAt < timeoutMs, `rank ${f.rank} failed ${(f.at as number) - killedAt} ms after the kill`);
        if (killed === 0) {
          // The store dies with rank 0: "rank 0 is gone".
          assert.equal(f.kind, 'store-gone', String(f.message));
          assert.match(String(f.message), /^dalle: rank 0 is gone: its store at 127\.0\.0\.1:\d+ does not answer/);
        } else {
          assert.equal(f.kind, 'exited', String(f.message));
          const pid = ready[killed].pid as number;
          assert.match(String(f.message), new RegExp(`^dalle: rank ${killed} \\(host [^,]+, pid ${pid}\\) exited: allReduce #\\d+ \\(sum, 1000 f32\\) failed`));
        }
      }
    });
  }

  // Four ranks: rank 0 and two others time out together, and rank 0 (whose process serves the store and exits on the
  // failure) must not be taken for the cause by the ones that ask the store a moment later.
  it('a rank stopped mid-run (SIGSTOP): the others fail at the timeout, naming it and its silence', async () => {
    ranks = startRanks({ worldSize: 4, scenarios: ['loop'], port: await freePort(), timeoutMs, seed, outDir: '' });
    const ready = await Promise.all(ranks.map((r) => r.next('ready', 8000)));
    const victim = ranks[1];
    const stoppedAt = Date.now();
    victim.child.kill('SIGSTOP');
    try {
      for (const f of await failures([ranks[0], ranks[2], ranks[3]], timeoutMs + 5000)) {
        assert.equal(f.kind, 'silent', String(f.message));
        assert.equal(f.faultyRank, 1);
        assert.match(String(f.message), new RegExp(`^dalle: rank 1 \\(host [^,]+, pid ${ready[1].pid}\\) stopped answering: no heartbeat for \\d+\\.\\d s`));
        const after = (f.at as number) - stoppedAt;
        assert.ok(after >= timeoutMs - 500 && after < timeoutMs + 3000, `rank ${f.rank} failed ${after} ms after the stop`);
        assert.match(String(f.hint), /stopped \(SIGSTOP/);
      }
    } finally {
      victim.child.kill('SIGCONT');
      victim.child.kill('SIGKILL');
    }
  });
});
