/**
 * The generation loop (sampler.ts): the KV-cached loop gives the tokens of a full recompute, rows do not depend on
 * their batch, prompts are kept, guidance is applied, caches are freed. On a fake prior with the same interface
 * (fake-prior.ts), so the loop's bookkeeping is checked independently of the model.
 */
import assert from 'node:assert/strict';
import { filteredProbs, guideLogits } from '../../src/core/sample/filters';
import { padCaption } from '../../src/core/sample/generate';
import { unitRng } from '../../src/core/sample/plan';
import { SampleLoopOptions, sampleImageTokens, unconditionalText } from '../../src/core/sample/sampler';
import { Prior, PriorArch, padText } from '../../src/core/models/prior';
import { native } from '../../src/core/native';
import { Philox, Tensor, noGrad } from '../../src/core/tensor';
import { FakePrior } from './fake-prior';

const dims = { textVocab: 11, textLen: 5, gridSide: 4, imageVocab: 9 };
const captions = [[1, 2, 3], [4], [5, 6, 7, 8, 9], []];

function texts(rows: number[][]): Int32Array {
  const out = new Int32Array(rows.length * dims.textLen);
  rows.forEach((ids, b) => out.set(padCaption(ids, dims.textLen, dims.textVocab), b * dims.textLen));
  return out;
}

function run(prior: FakePrior, which: number[], options: SampleLoopOptions, prefix?: Int32Array) {
  const rows = which.map((i) => captions[i]);
  const rngs = which.map((i) => unitRng(42, { caption: i, sample: 0 }));
  const r = prefix ? prefix.length : 0;
  const p = new Int32Array(which.length * r);
  if (prefix) which.forEach((_, b) => p.set(prefix, b * r));
  return sampleImageTokens(prior, { text: texts(rows), prefix: p, rngs }, options);
}

describe('sample: generation loop', () => {
  const N = dims.gridSide ** 2;
  const variants: [string, SampleLoopOptions, Int32Array | undefined][] = [
    ['plain', { sampling: { temperature: 1, topK: 0, topP: 1 } }, undefined],
    ['filtered', { sampling: { temperature: 0.8, topK: 4, topP: 0.9 } }, undefined],
    ['guided', { sampling: { temperature: 1, topK: 0, topP: 1 }, condScale: 3 }, undefined],
    ['prompted + guided', { sampling: { temperature: 1.2, topK: 0, topP: 0.95 }, condScale: 2 }, Int32Array.from([3, 1, 4, 1, 5, 8])],
  ];

  for (const [name, options, prefix] of variants) {
    it(`${name}: the KV cache gives the tokens of full forwards, and batch 1 = batch 4`, () => {
      const prior = new FakePrior(dims);
      const cached = run(prior, [0, 1, 2, 3], options, prefix);
      const full = run(prior, [0, 1, 2, 3], { ...options, useCache: false }, prefix);
      assert.deepEqual(Array.from(cached.tokens), Array.from(full.tokens));
      assert.deepEqual(Array.from(cached.logLikelihood), Array.from(full.logLikelihood));
      for (let b = 0; b < 4; b++) {
        const alone = run(prior, [b], options, prefix);
        assert.deepEqual(Array.from(alone.tokens), Array.from(cached.tokens.subarray(b * N, (b + 1) * N)), `row ${b}`);
        assert.equal(alone.logLikelihood[0], cached.logLikelihood[b]);
      }
      if (prefix) for (let b = 0; b < 4; b++) assert.deepEqual(Array.from(cached.tokens.subarray(b * N, b * N + prefix.length)), Array.from(prefix));
      for (const t of cached.tokens) assert.ok(t >= 0 && t < dims.imageVocab);
      assert.equal(prior.open, 0, 'every cache was disposed');
    });
  }

  it('samples from the guided, filtered distribution and reports the conditional log-likelihood', () => {
    // Replays the loop by hand for one row with the fake's full forward.
    const prior = new FakePrior(dims);
    const options = { sampling: { temperature: 0.9, topK: 5, topP: 0.8 }, condScale: 2.5 };
    const got = run(prior, [2], options);
    const rng = unitRng(42, { caption: 2, sample: 0 });
    const text = Tensor.from(texts([captions[2]]), [1, dims.textLen], 'i32');
    const uncond = Tensor.from(unconditionalText(dims.textLen, dims.textVocab), [1, dims.textLen], 'i32');
    const image = Tensor.from(got.tokens, [1, N], 'i32');
    const c = prior.forward(text, image).imageLogits.toArray() as Float32Array;
    const u = prior.forward(uncond, image).imageLogits.toArray() as Float32Array;
    let ll = 0;
    const V = dims.imageVocab;
    for (let t = 0; t < N; t++) {
      const ct = c.subarray(t * V, (t + 1) * V);
      const p = filteredProbs(guideLogits(ct, u.subarray(t * V, (t + 1) * V), 2.5), options.sampling);
      const x = rng.uniform();
      let acc = 0;
      let expect = -1;
      for (let v = 0; v < V && expect < 0; v++) if (p[v] > 0 && x < (acc += p[v])) expect = v;
      assert.equal(got.tokens[t], expect, `position ${t}`);
      const m = Math.max(...ct);
      ll += ct[expect] - m - Math.log(ct.reduce((s, v) => s + Math.exp(v - m), 0));
    }
    assert.ok(Math.abs(got.logLikelihood[0] - ll) < 1e-9, `${got.logLikelihood[0]} vs ${ll}`);
    for (const t of [text, uncond, image]) t.dispose();
  });

  it('rejects a prompt as long as the grid and a text of the wrong length', () => {
    const prior = new FakePrior(dims);
    assert.throws(() => run(prior, [0], { sampling: { temperature: 1, topK: 0, topP: 1 } }, new Int32Array(N)), /0 <= r < 16/);
    assert.throws(() => sampleImageTokens(prior, { text: new Int32Array(3), rngs: [unitRng(1, { caption: 0, sample: 0 })] }, { sampling: { temperature: 1, topK: 0, topP: 1 } }), /text has 3 tokens/);
  });
});

/** A tiny random prior (odd sizes: 3 layers row, column, conv; 2 heads of 5; L 4; G 4; Vt 7; Vi 13), weights shaken off init. */
const TINY: PriorArch = { n_layers: 3, n_heads: 2, head_dim: 5, text_len: 4, text_vocab: 7, image_grid: 4, image_vocab: 13, conv_kernel: 3 };

function shakenPrior(seed: number): Prior {
  const model = new Prior(TINY, new Philox(seed));
  const rng = new Philox(seed + 1);
  noGrad(() => {
    for (const p of model.parameters()) {
      const host = p.toArray() as Float32Array;
      const noise = rng.fillNormal(new Float32Array(host.length));
      for (let i = 0; i < host.length; i++) host[i] += 0.5 * noise[i];
      const t = Tensor.from(host, p.shape);
      native.memcpy(p.address, t.address, 4 * p.size);
      t.dispose();
    }
  });
  return model;
}

describe('sample: generation loop on the real prior', function () {
  this.timeout(60000);
  let prior: Prior;
  before(() => {
    prior = shakenPrior(5);
  });
  after(() => prior.dispose());
  const N = TINY.image_grid ** 2;
  const ids = [[1, 2, 3], [6], [0, 5, 4, 3], []];
  const text = (which: number[]) => padText(which.map((i) => ids[i]), TINY.text_len, TINY.text_vocab);
  const rngs = (which: number[], seed: number) => which.map((i) => unitRng(seed, { caption: i, sample: 1 }));

  const variants: [string, SampleLoopOptions, number][] = [
    ['plain', { sampling: { temperature: 1, topK: 0, topP: 1 } }, 0],
    ['filtered + guided', { sampling: { temperature: 0.9, topK: 6, topP: 0.95 }, condScale: 2 }, 0],
    ['prompted (1 row) + guided', { sampling: { temperature: 1, topK: 0, topP: 1 }, condScale: 1.5 }, TINY.image_grid],
  ];
  for (const [name, options, r] of variants) {
    it(`${name}: KV-cached sampling gives the tokens of full forwards; batch 1 and batch 3 give the same tokens`, () => {
      const which = [0, 1, 2, 3];
      const prefixOne = Int32Array.from({ length: r }, (_, i) => (7 * i + 3) % TINY.image_vocab);
      const prefix = (rows: number) => {
        const p = new Int32Array(rows * r);
        for (let b = 0; b < rows; b++) p.set(prefixOne, b * r);
        return p;
      };
      for (const seed of [1, 2, 3]) {
        const cached = sampleImageTokens(prior, { text: text(which), prefix: prefix(4), rngs: rngs(which, seed) }, options);
        const full = sampleImageTokens(prior, { text: text(which), prefix: prefix(4), rngs: rngs(which, seed) }, { ...options, useCache: false });
        assert.deepEqual(Array.from(cached.tokens), Array.from(full.tokens), `seed ${seed}`);
        for (let b = 0; b < 4; b++) assert.ok(Math.abs(cached.logLikelihood[b] - full.logLikelihood[b]) < 1e-3, `row ${b}: ${cached.logLikelihood[b]} vs ${full.logLikelihood[b]}`);
        // The same rows, one at a time and three at a time (rows 1..3), give the same tokens.
        const three = sampleImageTokens(prior, { text: text([1, 2, 3]), prefix: prefix(3), rngs: rngs([1, 2, 3], seed) }, options);
        assert.deepEqual(Array.from(three.tokens), Array.from(cached.tokens.subarray(N)), `seed ${seed}: batch 3 vs batch 4`);
        for (const b of [0, 2]) {
          const one = sampleImageTokens(prior, { text: text([which[b]]), prefix: prefix(1), rngs: rngs([which[b]], seed) }, options);
          assert.deepEqual(Array.from(one.tokens), Array.from(cached.tokens.subarray(b * N, (b + 1) * N)), `seed ${seed}: row ${b} alone`);
        }
        // Different seeds give different images (the test would be blind if every row were the same).
        if (seed === 1) assert.notDeepEqual(Array.from(cached.tokens.subarray(0, N)), Array.from(cached.tokens.subarray(3 * N)));
      }
    });
  }
});
