// bench/lib/op-timer.ts (what bench/step-profile.ts prints): every op call of a small forward and backward is timed
// under its op and pass, with the calls op-calls.ts counts for the same work; times are exclusive (nested op calls of a
// backward are charged to their own ops, so the sum never exceeds the work's wall time); the wrapped ops are restored,
// also when the work throws. No timing assertions beyond that: a shared test machine's numbers mean nothing.
import assert from 'node:assert/strict';
import { countOpCalls } from '../../bench/lib/op-calls';
import { timeOpCalls } from '../../bench/lib/op-timer';
import { matmul, relu, sum } from '../../src/core/ops';
import { Philox, Tensor, backward, randUniform, registeredOps, tidy } from '../../src/core/tensor';

describe('bench/lib/op-timer: exclusive time per op of a piece of work', () => {
  const rng = new Philox(7);
  const work = (): void => tidy(() => {
    const a = randUniform(rng, [5, 7]);
    const b = randUniform(rng, [7, 3]);
    a.requiresGrad = true;
    b.requiresGrad = true;
    backward(sum(relu(matmul(a, b))));
  });

  it('times each op and pass with the call counts of op-calls, exclusive of nested calls', () => {
    const counted = countOpCalls(registeredOps(), work);
    const { times, totalMs } = timeOpCalls(registeredOps(), work);
    for (const [op, perKey] of counted.forward) {
      const calls = [...perKey.values()].reduce((s, n) => s + n, 0);
      const timed = times.filter((t) => t.op === op && t.pass === 'fwd').reduce((s, t) => s + t.calls, 0);
      assert.equal(timed, calls, `${op} forward calls`);
    }
    for (const [op, perKey] of counted.backward) {
      const calls = [...perKey.values()].reduce((s, n) => s + n, 0);
      const timed = times.filter((t) => t.op === op && t.pass === 'bwd').reduce((s, t) => s + t.calls, 0);
      assert.equal(timed, calls, `${op} backward calls`);
    }
    for (const op of ['matmul', 'relu', 'sum']) assert.ok(times.some((t) => t.op === op && t.pass === 'bwd'), `${op} bwd`);
    assert.ok(times.every((t) => t.ms >= 0));
    const inOps = times.reduce((s, t) => s + t.ms, 0);
    assert.ok(inOps <= totalMs, `exclusive times add up to ${inOps} ms, more than the work's ${totalMs} ms`);
    const sorted = times.map((t) => t.ms);
    assert.deepEqual(sorted, [...sorted].sort((x, y) => y - x), 'rows come slowest first');
  });

  it('restores the ops it wrapped, also when the work throws', () => {
    const before = registeredOps().map((d) => [d.forward, d.backward]);
    assert.throws(() => timeOpCalls(registeredOps(), () => {
      tidy(() => void relu(Tensor.from(new Float32Array([1, -1]), [2])));
      throw new Error('work failed');
    }), /work failed/);
    registeredOps().forEach((d, i) => {
      assert.equal(d.forward, before[i][0], `${d.name}.forward restored`);
      assert.equal(d.backward, before[i][1], `${d.name}.backward restored`);
    });
  });
});
