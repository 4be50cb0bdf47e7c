// The NCCL backend's host logic, on the CPU (no GPU, no NCCL): native/cuda/nccl_plan.h (how allReduceBuffers packs
// device buffers into one bucket) and native/cuda/nccl_watchdog.h (when an operation completes, times out, or fails
// with NCCL's asynchronous error, and what every other pending or later operation is told), compiled with g++ from the
// same headers nccl.cc includes (native/cuda/emu/nccl_host_test.cc) and driven line by line.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { makeRandom, TEST_SEED } from '../harness/random';
import { useEmuProgram } from './gxx';

interface Plan {
  error: string;
  total: number;
  inPlace: boolean;
  entries: Array<[number, number, number]>;
}

interface Failure {
  id: number;
  kind: string;
  what: string;
  cause: string;
  message: string;
}

interface Step {
  completed: number[];
  failed: Failure[];
  abort: boolean;
  pending: number;
  broken: boolean;
  refusal: string;
  probed?: number[];
  added?: boolean;
}

/** Runs the program over `lines` (fields joined by tabs); one parsed answer per line. */
function session<T = Step>(exe: string, lines: Array<Array<string | number>>): T[] {
  const r = spawnSync(exe, { input: lines.map((l) => l.join('\t')).join('\n') + '\n', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as T & { bad?: string });
  for (const o of out) assert.equal(o.bad, undefined, `the program did not understand: ${o.bad}`);
  assert.equal(out.length, lines.length);
  return out;
}

describe('NCCL backend host logic (native/cuda/nccl_plan.h, nccl_watchdog.h; no GPU)', function () {
  this.timeout(60000);
  const exe = useEmuProgram('nccl_host_test.cc', 'c++17');
  const rand = makeRandom(TEST_SEED);
  const int = (n: number): number => Math.floor(rand.uniform() * n);

  const plan = (spans: Array<[number, number]>, max = 2 ** 32): Plan =>
    session<Plan>(exe(), [['plan', max, spans.map(([a, c]) => `${a},${c}`).join(';')]])[0];

  it(`packs random buffer lists in order at running offsets, skipping empty ones (seed ${TEST_SEED})`, () => {
    for (let trial = 0; trial < 40; trial++) {
      // Disjoint runs at increasing addresses, then shuffled: the plan keeps the caller's order, not the addresses'.
      const n = 1 + int(12);
      let at = 4096;
      const spans: Array<[number, number]> = [];
      for (let i = 0; i < n; i++) {
        const count = int(4) === 0 ? 0 : 1 + int(5000);
        spans.push([at, count]);
        at += 4 * count + 4 * int(100);
      }
      for (let i = spans.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [spans[i], spans[j]] = [spans[j], spans[i]];
      }
      const p = plan(spans);
      assert.equal(p.error, '');
      const nonEmpty = spans.map((s, i) => [i, s[1]] as const).filter(([, c]) => c > 0);
      let offset = 0;
      const expected = nonEmpty.map(([i, c]) => {
        const e: [number, number, number] = [i, offset, c];
        offset += c;
        return e;
      });
      assert.deepEqual(p.entries, expected);
      assert.equal(p.total, offset);
      assert.equal(p.inPlace, nonEmpty.length === 1, 'one non-empty buffer is reduced where it is');
    }
    assert.deepEqual(plan([]), { error: '', total: 0, inPlace: false, entries: [] });
    assert.deepEqual(plan([[0, 0], [4096, 0]]), { error: '', total: 0, inPlace: false, entries: [] }, 'empty buffers may have no address');
  });

  it('refuses overlapping buffers (naming both), a null address with values, and more values than the limit', () => {
    for (let trial = 0; trial < 20; trial++) {
      const a = 1 << 20;
      const countA = 10 + int(100);
      const inside = a + 4 * int(countA); // starts within A's run
      const spans: Array<[number, number]> = [[8 << 20, 3], [a, countA], [inside, 1 + int(50)]];
      if (trial % 2) spans.reverse();
      const p = plan(spans);
      const [i, j] = trial % 2 ? [0, 1] : [1, 2];
      assert.equal(p.error, `buffers ${i} and ${j} overlap`);
      assert.deepEqual(p.entries, []);
    }
    // Adjacent runs do not overlap.
    assert.equal(plan([[4096, 10], [4096 + 40, 10]]).error, '');
    assert.equal(plan([[4096, 3], [0, 2]]).error, 'buffer 1 has a null address and 2 values');
    assert.equal(plan([[4096, 60], [1 << 20, 41]], 100).error, 'more than 100 values in one bucket');
    assert.equal(plan([[4096, 60], [1 << 20, 40]], 100).error, '');
  });

  it('settles operations in issue order, probing nothing past the oldest pending one', () => {
    const [, , , , first, second, third] = session(exe(), [
      ['tracker', 1000],
      ['add', 0, 1, 'allReduce #1 (sum, 3 f32)'],
      ['add', 1, 2, 'allReduceBuffers #2 (sum, 4 buffers, 100 f32)'],
      ['add', 2, 3, 'broadcast #3 (8 bytes from rank 0)'],
      ['poll', 5, '-', '1=pending,2=done,3=done'],
      ['poll', 6, '-', '1=done,2=done,3=pending'],
      ['poll', 7, '-', '3=done'],
    ]);
    assert.deepEqual(first.completed, [], 'a later event cannot complete an earlier operation');
    assert.deepEqual(first.probed, [1]);
    assert.deepEqual(second.completed, [1, 2]);
    assert.deepEqual(second.probed, [1, 2, 3]);
    assert.equal(second.pending, 1);
    assert.deepEqual(third.completed, [3]);
    assert.equal(third.pending, 0);
    assert.equal(third.abort, false);
  });

  it('times an operation out from when it became the oldest, not from when it was issued', () => {
    const steps = session(exe(), [
      ['tracker', 1000],
      ['add', 0, 1, 'allReduce #1 (sum, 1 f32)'],
      ['add', 0, 2, 'allReduce #2 (sum, 1 f32)'],
      ['poll', 900, '-', '1=done'],      // #2 is the oldest from t = 900
      ['poll', 1500, '-', ''],           // 600 ms as the oldest: still waiting
      ['poll', 1900, '-', ''],           // exactly the timeout: still waiting
      ['poll', 1901, '-', ''],
      ['add', 1902, 3, 'barrier'],
      ['poll', 5000, '-', '3=done'],
    ]);
    assert.deepEqual(steps[3].completed, [1]);
    assert.deepEqual([steps[4].failed, steps[5].failed], [[], []]);
    const out = steps[6];
    assert.equal(out.abort, true, 'the communicator is aborted, so that the compute stream waiting on it goes on');
    assert.deepEqual(out.failed, [{
      id: 2, kind: 'timeout', what: 'allReduce #2 (sum, 1 f32)', cause: 'it did not complete within 1.0 s',
      message: 'allReduce #2 (sum, 1 f32) failed: it did not complete within 1.0 s',
    }]);
    assert.equal(steps[7].added, false);
    assert.equal(steps[7].refusal, 'the communicator is unusable after an earlier failure: allReduce #2 (sum, 1 f32) failed: it did not complete within 1.0 s');
    assert.deepEqual([steps[8].completed, steps[8].failed, steps[8].abort], [[], [], false], 'nothing happens after the failure');
  });

  it("fails every pending operation on NCCL's asynchronous error or a CUDA error: the oldest with the cause, the rest as its consequence", () => {
    const asyncStep = session(exe(), [
      ['tracker', 60000],
      ['add', 0, 7, 'allReduceBuffers #7 (sum, 2 buffers, 10 f32)'],
      ['add', 0, 8, 'allReduce #8 (max, 1 f64)'],
      ['poll', 10, 'ncclRemoteError: remote process exited or there was a network error', '7=done'],
    ])[3];
    assert.equal(asyncStep.abort, true);
    assert.deepEqual(asyncStep.completed, [], 'the error is acted on before anything else');
    assert.deepEqual(asyncStep.failed.map((f) => [f.id, f.kind]), [[7, 'nccl'], [8, 'nccl']]);
    assert.equal(asyncStep.failed[0].cause, 'NCCL reported an asynchronous error: ncclRemoteError: remote process exited or there was a network error');
    assert.equal(asyncStep.failed[1].cause, `not completed: the communicator is unusable after an earlier failure: ${asyncStep.failed[0].message}`);

    const cudaStep = session(exe(), [
      ['tracker', 60000],
      ['add', 0, 1, 'allReduce #1 (sum, 2 f32)'],
      ['add', 0, 2, 'allReduce #2 (sum, 2 f32)'],
      ['poll', 3, '-', '1=done,2=failed:cudaErrorIllegalAddress: an illegal memory access was encountered'],
    ])[3];
    assert.deepEqual(cudaStep.completed, [1], 'what completed before the error is settled as completed');
    assert.deepEqual(cudaStep.failed.map((f) => [f.id, f.kind, f.cause]), [
      [2, 'cuda', 'a CUDA error on the communication stream: cudaErrorIllegalAddress: an illegal memory access was encountered'],
    ]);

    const idle = session(exe(), [['tracker', 1000], ['poll', 3, 'ncclSystemError: x', '']])[1];
    assert.deepEqual([idle.failed, idle.abort, idle.broken], [[], true, true], 'an error between operations still ends the communicator');
    assert.equal(idle.refusal, 'the communicator is unusable after an earlier failure: NCCL reported an asynchronous error: ncclSystemError: x');
  });

  it('an operation NCCL refused while it was issued is the cause; a close fails what is pending and aborts only then', () => {
    const refused = session(exe(), [
      ['tracker', 60000],
      ['add', 0, 1, 'allReduce #1 (sum, 1 f32)'],
      ['add', 0, 2, 'allReduce #2 (sum, 1 f32)'],
      ['add', 0, 3, 'broadcast #3 (1 bytes from rank 1)'],
      ['fail', 'nccl', 3, 'ncclBroadcast: ncclInvalidUsage'],
    ])[4];
    assert.equal(refused.abort, true);
    assert.deepEqual(refused.failed.map((f) => f.cause.startsWith('not completed: ') ? `${f.id} consequence` : `${f.id} ${f.cause}`), [
      '1 consequence', '2 consequence', '3 ncclBroadcast: ncclInvalidUsage',
    ]);
    assert.match(refused.failed[0].cause, /unusable after an earlier failure: broadcast #3 \(1 bytes from rank 1\) failed: ncclBroadcast: ncclInvalidUsage$/);

    const clean = session(exe(), [['tracker', 1000], ['fail', 'closed', 0, 'the collective was closed before this operation completed']])[1];
    assert.deepEqual([clean.failed, clean.abort, clean.refusal], [[], false, 'the collective was closed']);
    const busy = session(exe(), [
      ['tracker', 1000],
      ['add', 0, 1, 'allReduce #1 (sum, 1 f32)'],
      ['add', 0, 2, 'barrier'],
      ['fail', 'closed', 0, 'the collective was closed before this operation completed'],
    ])[3];
    assert.equal(busy.abort, true, 'operations in flight: destroying would wait for them, so the communicator is aborted');
    assert.deepEqual(busy.failed.map((f) => [f.id, f.kind, f.cause]), [
      [1, 'closed', 'the collective was closed before this operation completed'],
      [2, 'closed', 'the collective was closed before this operation completed'],
    ]);
  });
});
