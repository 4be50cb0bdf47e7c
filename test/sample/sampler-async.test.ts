/**
 * The generation loop's asynchronous driver (sampleImageTokensAsync, what `dalle generate` runs for both runtimes):
 * the same tokens and log-likelihoods as the synchronous driver, whether the prior answers at once (asyncSteps, the
 * engine's way) or later (a deferred prior, onnxruntime's way); caches are freed, also when the prior fails.
 */
import assert from 'node:assert/strict';
import { padCaption } from '../../src/core/sample/generate';
import { unitRng } from '../../src/core/sample/plan';
import { AsyncStepPrior, SampleLoopOptions, asyncSteps, sampleImageTokens, sampleImageTokensAsync } from '../../src/core/sample/sampler';
import { TEST_SEED } from '../harness/random';
import { FakePrior } from './fake-prior';

const dims = { textVocab: 11, textLen: 5, gridSide: 4, imageVocab: 9 };
const captions = [[1, 2, 3], [4], [5, 6, 7, 8, 9], []];

function request(prefix?: Int32Array, seed = TEST_SEED) {
  const B = captions.length;
  const text = new Int32Array(B * dims.textLen);
  captions.forEach((ids, b) => text.set(padCaption(ids, dims.textLen, dims.textVocab), b * dims.textLen));
  const r = prefix ? prefix.length : 0;
  const p = new Int32Array(B * r);
  if (prefix) for (let b = 0; b < B; b++) p.set(prefix, b * r);
  return { text, prefix: p, rngs: captions.map((_, i) => unitRng(seed, { caption: i, sample: 0 })) };
}

/** The fake prior behind the asynchronous interface, each answer delivered on a later turn of the event loop. */
function deferred(prior: FakePrior, failAtStep = -1): AsyncStepPrior {
  const sync = asyncSteps(prior);
  let steps = 0;
  const later = <T>(value: () => T): Promise<T> => new Promise((resolve, reject) => setImmediate(() => {
    try {
      resolve(value());
    } catch (error) {
      reject(error);
    }
  }));
  return {
    ...sync,
    prefill: (cache, text, prefix, rows) => sync.prefill(cache, text, prefix, rows).then((l) => later(() => l)),
    step: (cache, tokens) => {
      if (steps++ === failAtStep) return later(() => { throw new Error('the runtime failed'); });
      return sync.step(cache, tokens).then((l) => later(() => l));
    },
  };
}

describe('sample: the asynchronous generation loop', () => {
  const variants: [string, SampleLoopOptions, Int32Array | undefined][] = [
    ['plain', { sampling: { temperature: 1, topK: 0, topP: 1 } }, undefined],
    ['filtered', { sampling: { temperature: 0.8, topK: 4, topP: 0.9 } }, undefined],
    ['guided', { sampling: { temperature: 1, topK: 0, topP: 1 }, condScale: 3 }, undefined],
    ['prompted + guided', { sampling: { temperature: 1.2, topK: 0, topP: 0.95 }, condScale: 2 }, Int32Array.from([3, 1, 4, 1, 5, 8])],
  ];
  for (const [name, options, prefix] of variants) {
    it(`${name}: the tokens and log-likelihoods of the synchronous loop, answered at once or later (seed ${TEST_SEED})`, async () => {
      const prior = new FakePrior(dims);
      const want = sampleImageTokens(prior, request(prefix), options);
      const progress: number[] = [];
      const now = await sampleImageTokensAsync(asyncSteps(prior), request(prefix), { ...options, onToken: (done) => progress.push(done) });
      const later = await sampleImageTokensAsync(deferred(prior), request(prefix), options);
      for (const got of [now, later]) {
        assert.deepEqual(Array.from(got.tokens), Array.from(want.tokens));
        assert.deepEqual(Array.from(got.logLikelihood), Array.from(want.logLikelihood));
      }
      const N = dims.gridSide ** 2;
      const r = prefix ? prefix.length : 0;
      assert.deepEqual(progress, Array.from({ length: N - r }, (_, i) => i + 1));
      assert.equal(prior.open, 0, 'every cache was disposed');
      assert.equal(prior.caches, 3);
    });
  }

  it('a failing prior: the error comes through and the cache is freed', async () => {
    const prior = new FakePrior(dims);
    await assert.rejects(sampleImageTokensAsync(deferred(prior, 5), request(), { sampling: { temperature: 1, topK: 0, topP: 1 } }), /the runtime failed/);
    assert.equal(prior.open, 0);
  });

  it('logits of the wrong size are an error naming the sizes', async () => {
    const prior = new FakePrior(dims);
    const bad: AsyncStepPrior = { ...asyncSteps(prior), prefill: () => Promise.resolve(new Float32Array(3)) };
    await assert.rejects(sampleImageTokensAsync(bad, request(), { sampling: { temperature: 1, topK: 0, topP: 1 } }), /returned 3 logits, expected rows \* image_vocab = 4 \* 9/);
    assert.equal(prior.open, 0);
  });
});
