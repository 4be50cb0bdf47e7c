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
import { Tensor } from '../../src/core/tensor';
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
