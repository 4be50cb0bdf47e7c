// The prior's memory estimates (src/core/models/prior/size.ts, printed by `dalle config`) against the engine
// allocator's measured peak (native.allocStats().peakBytesInUse, size classes included): a few real training steps
// (forward, backward, AdamW update) in fp32, fp16, bf16 and with recompute, and a generation (createCache, prefill,
// a step per image token), on two small architectures with odd sizes and a few batch sizes. Within 20% is the promise.
// Key: B = batch, L = text_len, G = grid side, N = G^2, Vt / Vi = text / image vocab.
import * as assert from 'node:assert';
import { Prior, PriorArch } from '../../src/core/models/prior';
import { allocatorBytes, priorGenerationMemory, priorParameterCount, priorTrainingMemory, PriorPrecision } from '../../src/core/models/prior/size';
import { Philox, Tensor, tidy } from '../../src/core/tensor';
import { native } from '../../src/core/native';
import { MIB, ODD, WIDE, measurePriorTraining } from '../harness/prior-memory';

const measureTraining = (arch: PriorArch, B: number, precision: PriorPrecision, recompute: boolean): number =>
  measurePriorTraining(native, 'cpu', arch, B, precision, recompute);




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
