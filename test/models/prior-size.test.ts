// The prior's memory estimates (src/core/models/prior/size.ts, printed by `dalle config`) against the engine
// allocator's measured peak (native.allocStats().peakBytesInUse, size classes included): a few real training steps
// (forward, backward, AdamW update) in fp32, fp16, bf16 and with recompute, and a generation (createCache, prefill,
// a step per image token), on two small architectures with odd sizes and a few batch sizes. Within 20% is the promise.
// Key: B = batch, L = text_len, G = grid side, N = G^2, Vt / Vi = text / image vocab.
import * as assert from 'node:assert';
import { Prior, PriorArch } from '../../src/core/models/prior';
import { allocatorBytes, priorGenerationMemory, priorParameterCount, priorTrainingMemory, PriorPrecision } from '../../src/core/models/prior/size';
import { Philox, Tensor, backward, tidy, zeroGrad } from '../../src/core/tensor';
import { AdamW } from '../../src/core/train/adamw';
import { createPrecision, priorResblocks } from '../../src/core/train/precision';
import { native } from '../../src/core/native';

/** Odd sizes: 3 layers, 3 heads of 20 (C 60), L 7, G 5, Vt 300, Vi 77. */
const ODD: PriorArch = { n_layers: 3, n_heads: 3, head_dim: 20, text_len: 7, text_vocab: 300, image_grid: 5, image_vocab: 77, conv_kernel: 3 };
/** Wider and shallower, a large text vocabulary: 2 layers, 4 heads of 32 (C 128), L 12, G 6, Vt 2000, Vi 256. */
const WIDE: PriorArch = { n_layers: 2, n_heads: 4, head_dim: 32, text_len: 12, text_vocab: 2000, image_grid: 6, image_vocab: 256, conv_kernel: 5 };

const MIB = 2 ** 20;

/** Peak allocator bytes above what was in use before: building the model, its optimizer, and 2 training steps. */
function measureTraining(arch: PriorArch, B: number, precision: PriorPrecision, recompute: boolean): number {
  const before = native.allocStats().bytesInUse;
  native.resetPeak();
  const model = new Prior(arch, new Philox(0));
  model.recompute = recompute;
  const p = createPrecision(precision, { workers: 1 });
  p.attach(priorResblocks(model));
  model.residual = p;
  const named = model.namedParameters();
  const opt = new AdamW([{ params: named.map(([name, tensor]) => ({ name, tensor })) }], { lr: 1e-4, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 0.045 });
  p.attachOptimizer(named, opt.stateTensors());
  const rng = new Philox(1);
  const L = arch.text_len, N = arch.image_grid ** 2;
  const text = rng.randint(B * L, arch.text_vocab), image = rng.randint(B * N, arch.image_vocab);
  for (let s = 0; s < 2; s++) {
    tidy(() => {
      zeroGrad(model.parameters());
      const r = model.loss(Tensor.from(text, [B, L], 'i32'), Tensor.from(image, [B, N], 'i32'));
      backward(r.loss);
      p.unscaleGradients();
      opt.update(1e-4);
      p.endStep();
      return r.loss.item();
    });
  }
  const peak = native.allocStats().peakBytesInUse - before;
  for (const t of opt.stateTensors().values()) t.dispose();
  model.dispose();
  return peak;
}

/** Peak allocator bytes of a model and a whole cached generation of B rows. */
function measureGeneration(arch: PriorArch, B: number): number {
  const before = native.allocStats().bytesInUse;
  native.resetPeak();
  const model = new Prior(arch, new Philox(0));
  const rng = new Philox(2);
  const cache = model.createCache(B);
  tidy(() => model.prefill(cache, Tensor.from(rng.randint(B * arch.text_len, arch.text_vocab), [B, arch.text_len], 'i32')).dispose());
  for (let i = 0; i < arch.image_grid ** 2 - 1; i++) {
    tidy(() => model.step(cache, Tensor.from(rng.randint(B, arch.image_vocab), [B], 'i32')).dispose());
  }
  const peak = native.allocStats().peakBytesInUse - before;
  cache.dispose();
  model.dispose();
  return peak;
}

function assertWithin(estimate: number, measured: number, what: string): void {
  const ratio = estimate / measured;
  assert.ok(ratio > 0.8 && ratio < 1.2, `${what}: estimate ${(estimate / MIB).toFixed(2)} MiB vs measured peak ${(measured / MIB).toFixed(2)} MiB (ratio ${ratio.toFixed(2)})`);
}

describe('prior memory estimates (dalle config)', function () {
  this.timeout(60000);

  it('allocatorBytes mirrors the allocator size classes', () => {
    for (const n of [0, 1, 63, 64, 65, 4096, 4097, 5000, 65537, 1000000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 * 2 ** 20 + 7]) {
      assert.equal(allocatorBytes(n), native.sizeClass(n), `size ${n}`);
    }
  });

  it('counts the parameters a Prior builds', () => {
    for (const arch of [ODD, WIDE]) assert.equal(priorParameterCount(arch), new Prior(arch, new Philox(0)).parameterCount());
  });

  for (const [name, arch] of [['odd', ODD], ['wide', WIDE]] as const) {
    for (const B of [1, 4, 8]) {
      it(`training memory, ${name} architecture, fp32, batch ${B}: within 20% of the measured peak`, () => {
        assertWithin(priorTrainingMemory(arch, B).totalBytes, measureTraining(arch, B, 'fp32', false), `${name} B=${B} fp32`);
      });
    }
    for (const precision of ['fp16', 'bf16'] as const) {
      it(`training memory, ${name} architecture, ${precision}, batch 4: within 20%`, () => {
        assertWithin(priorTrainingMemory(arch, 4, { precision }).totalBytes, measureTraining(arch, 4, precision, false), `${name} ${precision}`);
      });
    }
    it(`training memory, ${name} architecture, recompute, batch 8: within 20%`, () => {
      assertWithin(priorTrainingMemory(arch, 8, { recompute: true }).totalBytes, measureTraining(arch, 8, 'fp32', true), `${name} recompute`);
    });
    for (const precision of ['fp16', 'bf16'] as const) {
      it(`training memory, ${name} architecture, ${precision} with recompute, batch 8: within 20%`, () => {
        assertWithin(priorTrainingMemory(arch, 8, { precision, recompute: true }).totalBytes, measureTraining(arch, 8, precision, true), `${name} ${precision} recompute`);
      });
    }
    for (const B of [1, 8]) {
      it(`generation memory, ${name} architecture, batch ${B}: within 20%`, () => {
        assertWithin(priorGenerationMemory(arch, B).totalBytes, measureGeneration(arch, B), `${name} generation B=${B}`);
      });
    }
  }

  it('cond-scale other than 1 runs twice the rows', () => {
    const one = priorGenerationMemory(ODD, 4, { condScale: 1 });
    const guided = priorGenerationMemory(ODD, 4, { condScale: 3 });
    assert.equal(one.rows, 4);
    assert.equal(guided.rows, 8);
    assert.deepEqual(guided, { ...priorGenerationMemory(ODD, 8), rows: 8 });
  });
});
