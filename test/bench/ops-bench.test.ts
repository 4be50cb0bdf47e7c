// bench/ops.ts's case enumeration, in its --quick timing on tiny shapes (TINY_DIMS): every registered op appears in
// the table (with rows, or as "no shapes"), every case runs (forward and forward+backward), the call counts of a
// step are matched to cases by inputs and attributes, and the real configs' shapes are whole positive sizes.
// No timing assertions: the numbers of a shared test machine mean nothing.
import assert from 'node:assert/strict';
import { BenchOpsOptions, QUICK_TIMING, benchOps, markdownTable } from '../../bench/lib/op-bench';
import { countOpCalls } from '../../bench/lib/op-calls';
import { OP_BENCH_SHAPES, TINY_DIMS, dimsFromConfigs } from '../../bench/ops-shapes';
import { addOp } from '../../src/core/ops';
import { OpDef, Tensor, applyOp, liveStorage, refTensor, registeredOps, tidy } from '../../src/core/tensor';

const PEAKS = { bandwidth: 10e9, flopsF32: 100e9, flopsBf16: 200e9 };

function run(extra: Partial<BenchOpsOptions> = {}) {
  return benchOps({ ops: registeredOps(), shapes: OP_BENCH_SHAPES, dims: TINY_DIMS, peaks: PEAKS, timing: QUICK_TIMING, counts: null, ...extra });
}

describe('bench/ops: the op benchmark on tiny shapes (--quick timing)', function () {
  this.timeout(120000);

  it('lists every registered op, runs every case without error, both passes where there is a backward', () => {
    const before = liveStorage().count;
    const rows = run();
    assert.equal(liveStorage().count, before, 'the benchmark leaks tensors');
    const errors = rows.filter((r) => r.status === 'error').map((r) => `${r.op} [${r.case}] ${r.pass}: ${r.error}`);
    assert.deepEqual(errors, []);
    for (const op of registeredOps()) {
      const mine = rows.filter((r) => r.op === op.name);
      assert.ok(mine.length > 0, `${op.name} is missing from the table`);
      if (mine[0].status === 'no shapes') continue;
      assert.ok(mine.some((r) => r.pass === 'fwd'), `${op.name}: no forward row`);
      if (op.backward) assert.ok(mine.some((r) => r.pass === 'fwd+bwd'), `${op.name}: no forward+backward row`);
      for (const r of mine) {
        assert.ok(r.ms > 0 && r.bytes >= 0 && r.flops >= 0 && r.boundMs >= 0, `${op.name} [${r.case}]: ${JSON.stringify(r)}`);
        assert.equal(r.fraction === null, r.boundMs === 0);
      }
    }
    const table = markdownTable(rows);
    for (const op of registeredOps()) assert.ok(table.includes(`| ${op.name} |`), `${op.name} not in the markdown table`);
  });

  it('lists an op without shapes as "no shapes"', () => {
    const shapeless: OpDef<Record<string, never>> = {
      name: 'benchTestShapeless', kernels: [], forward: ([x]) => x, reference: ([x]) => refTensor(x.shape, x.data), cases: () => [],
    };
    const rows = run({ ops: [shapeless, addOp] });
    assert.deepEqual(rows.filter((r) => r.op === 'benchTestShapeless').map((r) => r.status), ['no shapes']);
    assert.ok(rows.filter((r) => r.op === 'add').every((r) => r.status === 'ok'));
  });

  it('weighs a case by the calls per step that match its inputs and attributes exactly', () => {
    const residual = OP_BENCH_SHAPES.add(TINY_DIMS).find((c) => c.name.startsWith('residual'))!;
    const x = Tensor.from(new Float32Array(residual.inputs[0].shape.reduce((a, b) => a * b, 1)), residual.inputs[0].shape);
    const forward = addOp.forward;
    try {
      const calls = countOpCalls(registeredOps(), () => tidy(() => {
        applyOp(addOp, [x, x], {});
        applyOp(addOp, [x, x], {});
        applyOp(addOp, [x, x], { other: 1 } as never); // other attributes: another call
      }));
      assert.equal(addOp.forward, forward, 'countOpCalls must restore the forward it wrapped');
      const rows = run({ ops: [addOp], counts: new Map([['prior-emoji', calls]]) });
      const fwd = rows.find((r) => r.case === residual.name && r.pass === 'fwd')!;
      const both = rows.find((r) => r.case === residual.name && r.pass === 'fwd+bwd')!;
      assert.equal(fwd.callsPerStep, 2);
      assert.equal(both.callsPerStep, 0);
      assert.equal(fwd.stepMs, 2 * fwd.ms);
      const dvaeRow = rows.find((r) => r.model === 'dvae-emoji')!;
      assert.equal(dvaeRow.callsPerStep, null, 'a model whose step was not counted has no calls per step');
    } finally {
      x.dispose();
    }
  });

  it('gives whole positive sizes at the shapes of configs/prior-emoji.yaml and configs/dvae-emoji.yaml', () => {
    const dims = dimsFromConfigs();
    for (const [op, shapes] of Object.entries(OP_BENCH_SHAPES)) {
      const cases = shapes(dims);
      assert.ok(cases.length > 0, `${op}: no cases`);
      for (const c of cases) {
        for (const spec of c.inputs) {
          assert.ok(spec.shape.every((s) => Number.isInteger(s) && s > 0), `${op} [${c.name}]: shape ${spec.shape}`);
        }
        assert.ok(Number.isFinite(c.flops) && c.flops >= 0, `${op} [${c.name}]: flops ${c.flops}`);
      }
    }
  });
});
