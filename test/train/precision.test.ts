// Mixed precision with per-resblock gradient scales (src/core/train/precision), on a toy pre-norm residual stack with
// fp16 emulated exactly on the CPU (every value the GPU holds in fp16 is rounded to fp16): the scale trace of a run
// against a float64 replay of the rules, an injected Inf, and a model whose gradients span more than fp16's range,
// where one global scale underflows and per-resblock scales do not.
import * as assert from 'node:assert';
import { Philox, Tensor, backward, keep, randNormal, tidy, zeroGrad } from '../../src/core/tensor';
import { AdamW } from '../../src/core/train/adamw';
import { GradScaleRules, GradScaler, HalfPrecision, PAPER_GRAD_SCALE, createPrecision, plainResidual } from '../../src/core/train/precision';
import { ToyResidual } from './precision-toy';

const C = 8;
const H = 16;
const B = 6;

function data(seed: number): { x: Tensor; t: Tensor } {
  const rng = new Philox(seed);
  return { x: keep(randNormal(rng, [B, C])), t: keep(randNormal(rng, [B, C])) };
}

function adam(model: ToyResidual, lr: number, eps = 1e-8): AdamW {
  return new AdamW([{ params: model.namedParameters().map(([name, tensor]) => ({ name, tensor })) }], { lr, beta1: 0.9, beta2: 0.96, eps, weightDecay: 0 });
}

/** One training step through the Precision protocol the trainers use; returns the loss and the flagged resblocks. */
function step(model: ToyResidual, precision: HalfPrecision, opt: AdamW | null, x: Tensor, t: Tensor, weight: number): { loss: number; flagged: number[]; took: boolean } {
  zeroGrad(model.parameters());
  const loss = tidy(() => {
    const l = model.loss(x, t, weight);
    backward(l);
    return l.item();
  });
  const finite = precision.unscaleGradients();
  const flagged = precision.scaler.flagged();
  if (finite && opt) opt.update();
  precision.endStep();
  return { loss, flagged, took: finite };
}

/** The rules, replayed in float64 from the flagged resblocks of each step (independent of GradScaler). */
function replay(rules: GradScaleRules, M: number, count: number, flaggedPerStep: number[][]): { scales: number[][]; skipped: number } {
  let s = new Array<number>(count).fill(rules.init * M);
  const out: number[][] = [];
  let skipped = 0;
  for (const flagged of flaggedPerStep) {
    if (flagged.length === 0) s = s.map((v) => Math.min(rules.max * M, v * rules.growth));
    else {
      skipped++;
      s = s.map((v, r) => (flagged.includes(r) ? Math.max(rules.min * M, v / rules.backoff) : v));
    }
    out.push([...s]);
  }
  return { scales: out, skipped };
}

function gradsOf(model: ToyResidual, r: number): Float32Array[] {
  return model.blocks[r].namedParameters().map(([, p]) => Float32Array.from(p.grad!.toArray()));
}

function allFinite(arrays: Float32Array[]): boolean {
  return arrays.every((a) => a.every((v) => Number.isFinite(v)));
}

describe('precision: per-resblock gradient scaling (fp16 emulated exactly)', () => {
  it('fp32 precision is a no-op; createPrecision builds each kind', () => {
    const p = createPrecision('fp32');
    assert.strictEqual(p.unscaleGradients(), true);
    assert.deepStrictEqual(p.metrics(), {});
    assert.strictEqual(createPrecision('fp16').kind, 'fp16');
    assert.strictEqual(createPrecision('bf16').kind, 'bf16');
    assert.throws(() => createPrecision('fp8' as never), /unknown precision 'fp8'/);
  });

  it('GradScaler: init, growth, back-off and clamps, with M workers', () => {
    const s = new GradScaler(3, PAPER_GRAD_SCALE, 2);
    assert.deepStrictEqual(s.scales, [2 ** 14, 2 ** 14, 2 ** 14]);
    s.flag(1);
    assert.strictEqual(s.endStep(), false);
    assert.deepStrictEqual(s.scales, [2 ** 14, 2 ** 14 / Math.SQRT2, 2 ** 14]);
    assert.strictEqual(s.endStep(), true);
    assert.deepStrictEqual(s.scales, [2 ** 14 * 2 ** (1 / 1000), (2 ** 14 / Math.SQRT2) * 2 ** (1 / 1000), 2 ** 14 * 2 ** (1 / 1000)]);
    for (let i = 0; i < 40; i++) {
      s.flag(0);
      s.endStep();
    }
    assert.strictEqual(s.scales[0], 2 ** 8, 'clamped at min * M = 2^7 * 2');
    assert.deepStrictEqual([s.skipped, s.updates], [41, 1]);
    const t = new GradScaler(3, PAPER_GRAD_SCALE, 2);
    t.load(JSON.parse(JSON.stringify(s.state())));
    assert.deepStrictEqual(t.state(), s.state());
    assert.throws(() => t.load({ scales: [1, 2], skipped: 0, updates: 0 }), /has 2 scales, this model has 3/);
  });

  it('the scale trace of a run follows the rules to the last bit (float64 replay), with skips only in overflowing resblocks', () => {
    // Gains 0.01 .. 3: the later resblocks' fp16 gradients overflow at 2^13 and must back off, the earlier ones not.
    for (const { rules, M } of [
      { rules: PAPER_GRAD_SCALE, M: 1 },
      { rules: { ...PAPER_GRAD_SCALE, min: 2 ** 8, max: 2 ** 13 * 2 ** (5 / 1000) }, M: 2 }, // the max clamp is reached
    ]) {
      const model = new ToyResidual(C, H, [0.01, 0.1, 1, 3], 1);
      const { x, t } = data(2);
      const precision = new HalfPrecision('fp16', { gradScale: rules, workers: M });
      precision.attach(model.resblocks());
      model.residual = precision;
      const opt = adam(model, 3e-3);
      const flaggedPerStep: number[][] = [];
      const trace: number[][] = [];
      for (let i = 0; i < 40; i++) {
        const r = step(model, precision, opt, x, t, 30);
        flaggedPerStep.push(r.flagged);
        // metrics() has the scales this step ran with; the replay lists the scales after each step.
        assert.deepStrictEqual(precision.metrics().grad_scales, i === 0 ? new Array(4).fill(rules.init * M) : trace[i - 1]);
        trace.push([...precision.scaler.scales]);
      }
      const want = replay(rules, M, 4, flaggedPerStep);
      trace.forEach((scales, i) => scales.forEach((s, r) => assert.ok(Object.is(s, want.scales[i][r]), `step ${i + 1} resblock ${r}: ${s} vs replay ${want.scales[i][r]}`)));
      assert.strictEqual(precision.metrics().skipped, want.skipped);
      const skips = flaggedPerStep.filter((f) => f.length > 0).length;
      assert.ok(skips > 0 && skips < 40, `a mix of skipped (${skips}) and clean updates`);
      assert.ok(flaggedPerStep.every((f) => !f.includes(0)), 'resblock 0 (gain 0.01) never overflows');
      assert.ok(flaggedPerStep.some((f) => f.includes(3)), 'resblock 3 (gain 3) overflows at first');
      // The first scale is init * M; a resblock that never overflowed grew by growth once per clean update.
      const clean = 40 - skips;
      let grown = rules.init * M;
      for (let k = 0; k < clean; k++) grown = Math.min(rules.max * M, grown * rules.growth);
      assert.strictEqual(trace[39][0], grown);
      if (M === 2) {
        assert.ok(trace.some((sc) => sc[0] === rules.max * M), 'the max clamp is reached');
      }
      opt.dispose();
      model.dispose();
      x.dispose();
      t.dispose();
    }
  });

  it("an Inf injected into one resblock's gradient is zeroed there, lowers that resblock's scale only, and leaves the others finite", () => {
    const { x, t } = data(3);
    const run = (inject: boolean): { model: ToyResidual; precision: HalfPrecision; finite: boolean; flagged: number[] } => {
      const model = new ToyResidual(C, H, [1, 1, 1, 1], 4);
      const precision = new HalfPrecision('fp16');
      precision.attach(model.resblocks());
      model.residual = precision;
      model.inject = inject ? { r: 2, index: 5, value: Infinity } : null;
      zeroGrad(model.parameters());
      tidy(() => backward(model.loss(x, t, 1)));
      const leaving = precision.scaler.flagged(); // flagged by gradScaleLeave during backward
      assert.deepStrictEqual(leaving, inject ? [2] : [], 'the gradient leaving resblock 2 had non-finite values, zeroed');
      const finite = precision.unscaleGradients();
      return { model, precision, finite, flagged: precision.scaler.flagged() };
    };
    const clean = run(false);
    const hit = run(true);
    assert.strictEqual(clean.finite, true);
    assert.strictEqual(hit.finite, false);
    assert.deepStrictEqual(hit.flagged, [2], 'only resblock 2 is flagged');
    // Resblock 3 runs its backward before the fault: bit-identical to the clean run. Resblocks 0 and 1 get a
    // gradient in which resblock 2's non-finite contribution was zeroed: finite (and different from clean).
    const g3 = gradsOf(hit.model, 3);
    gradsOf(clean.model, 3).forEach((a, i) => assert.deepStrictEqual(g3[i], a));
    for (const r of [0, 1]) {
      assert.ok(allFinite(gradsOf(hit.model, r)), `resblock ${r} finite`);
      assert.notDeepStrictEqual(gradsOf(hit.model, r), gradsOf(clean.model, r));
    }
    assert.ok(allFinite(gradsOf(hit.model, 2)), 'resblock 2 parameters filtered too (the update is skipped anyway)');
    hit.precision.endStep();
    assert.deepStrictEqual(hit.precision.scaler.scales, [8192, 8192, 8192 / Math.SQRT2, 8192]);
    assert.deepStrictEqual(hit.precision.metrics(), { grad_scales: [8192, 8192, 8192, 8192], skipped: 1 });
    for (const r of [clean, hit]) r.model.dispose();
    x.dispose();
    t.dispose();
  });

  it('gradients spanning more than fp16 range: one global scale flushes the early resblocks to zero, per-resblock scales keep them, and train them', () => {
    // Resblocks 0, 1 have gain 1e-13: their gradients are ~1e-11, the late ones' up to ~1e2. The largest scale at
    // which the late resblocks do not overflow (found by the scaler itself) times 1e-11 is below fp16's smallest
    // subnormal half (2^-25 = 3e-8): with one scale every early gradient is zero. Both start at 2^22 (inside the
    // paper's [2^7, 2^24]) so the early resblocks' scaled gradients land in fp16's normal range.
    const gains = [1e-13, 1e-13, 1, 1];
    const rules = { ...PAPER_GRAD_SCALE, init: 2 ** 22 };
    const { x, t } = data(6);
    const weight = 100;
    const total = 60;
    const train = (kind: 'fp32' | 'per-resblock' | 'global', steps: number) => {
      const model = new ToyResidual(C, H, gains, 7);
      const start = model.blocks[0].fc.weight.toArray().slice();
      const precision = new HalfPrecision('fp16', { gradScale: rules, perResblock: kind !== 'global' });
      if (kind !== 'fp32') {
        precision.attach(model.resblocks());
        model.residual = precision;
      }
      // Adam with a tiny eps: the update of the early weights depends on their gradients' direction, not size.
      const opt = adam(model, 1e-3, 1e-30);
      const losses: number[] = [];
      let scales: number[] = [];
      let zeroFraction = 0;
      let relErr = NaN;
      let skipped = 0;
      for (let i = 0; i < steps; i++) {
        if (kind === 'fp32') {
          zeroGrad(model.parameters());
          losses.push(tidy(() => {
            const l = model.loss(x, t, weight);
            backward(l);
            return l.item();
          }));
          opt.update();
        } else {
          const r = step(model, precision, opt, x, t, weight);
          losses.push(r.loss);
          skipped += r.took ? 0 : 1;
        }
      }
      // The early resblocks' gradient at the final weights, against fp32 at the same weights.
      if (kind !== 'fp32') {
        zeroGrad(model.parameters());
        tidy(() => backward(model.loss(x, t, weight)));
        precision.unscaleGradients();
        // (A late resblock may overflow here and be flagged: the early ones' gradients are measured all the same.)
        if (kind === 'per-resblock') assert.ok(!precision.scaler.flagged().some((r) => r < 2), 'the early resblocks do not overflow');
        precision.endStep();
        const g16 = [...gradsOf(model, 0), ...gradsOf(model, 1)];
        scales = [...precision.scaler.scales];
        precision.detach();
        model.residual = plainResidual;
        zeroGrad(model.parameters());
        tidy(() => backward(model.loss(x, t, weight)));
        const g32 = [...gradsOf(model, 0), ...gradsOf(model, 1)];
        let zeros = 0;
        let n = 0;
        let num = 0;
        let den = 0;
        g16.forEach((a, i) => a.forEach((v, j) => {
          n++;
          if (v === 0 && g32[i][j] !== 0) zeros++;
          num += (v - g32[i][j]) ** 2;
          den += g32[i][j] ** 2;
        }));
        zeroFraction = zeros / n;
        relErr = Math.sqrt(num / den);
      }
      const end = model.blocks[0].fc.weight.toArray();
      let moved = 0;
      for (let i = 0; i < end.length; i++) moved = Math.max(moved, Math.abs(end[i] - start[i]));
      opt.dispose();
      model.dispose();
      return { losses, moved, zeroFraction, relErr, skipped, scales };
    };
    const per = train('per-resblock', total);
    const glob = train('global', total);
    // fp32 takes as many updates as the per-resblock run did (its first ones were skipped while the scales settled).
    const f32 = train('fp32', total - per.skipped);
    const steps = total;
    console.log(`      fp32 (${total - per.skipped} updates): early weight moved ${f32.moved.toExponential(3)}, final loss ${f32.losses[f32.losses.length - 1].toFixed(4)}`);
    console.log(`      per-resblock: scales ${per.scales.map((s) => s.toPrecision(4)).join(' ')}, skipped ${per.skipped}, early grads zeroed ${(100 * per.zeroFraction).toFixed(2)}%, rel. error ${per.relErr.toExponential(2)}, moved ${per.moved.toExponential(3)}, final loss ${per.losses[steps - 1].toFixed(4)}`);
    console.log(`      global: scale ${glob.scales[0].toPrecision(4)}, skipped ${glob.skipped}, early grads zeroed ${(100 * glob.zeroFraction).toFixed(2)}%, rel. error ${glob.relErr.toExponential(2)}, moved ${glob.moved.toExponential(3)}, final loss ${glob.losses[steps - 1].toFixed(4)}`);
    // One global scale: every early gradient is flushed to zero and those weights never move.
    assert.strictEqual(glob.zeroFraction, 1);
    assert.strictEqual(glob.relErr, 1);
    assert.strictEqual(glob.moved, 0);
    // Per-resblock scales: the early gradients survive (error of fp16 rounding only) and the weights train as in fp32.
    assert.ok(per.zeroFraction < 0.01, `early gradients zeroed: ${per.zeroFraction}`);
    assert.ok(per.relErr < 1e-2, `relative error ${per.relErr}`);
    assert.ok(per.moved > 0.8 * f32.moved && per.moved < 1.25 * f32.moved, `moved ${per.moved} vs fp32 ${f32.moved}`);
    assert.ok(per.losses[steps - 1] < per.losses[0], 'the per-resblock run trains');
    assert.ok(per.scales[0] > 2 ** 21 && per.scales[3] < 2 ** 9, 'early resblocks keep high scales, late ones back off');
    x.dispose();
    t.dispose();
  });
});
