// The dVAE's codebook-usage aids (not in the paper; off by default): the k-means codebook init, the straight-through
// estimator and the decoder warm-up, each against a direct computation.
// Key: B = batch, V = vocab_size, D = encoder feature channels, h, w = grid side.
import * as assert from 'node:assert';
import { Dvae, argmaxCodes, dvaeLoss, gumbelSoftmax, kmeansCodebookInit, logitLaplaceNll, mapPixels, straightThroughShift } from '../../src/core/models/dvae';
import { add, mul, sum } from '../../src/core/ops';
import { Philox, Tensor, backward, keep, noGrad, tidy, zeroGrad } from '../../src/core/tensor';
import { makeRandom } from '../harness/random';

const TINY = { n_hid: 8, n_groups: 2, n_blk_per_group: 1, vocab_size: 16 } as const;

function randomImages(seed: number, n: number, side: number): Float32Array {
  const rand = makeRandom(seed);
  // Piecewise-flat images (like emoji): a few coloured rectangles on white, so the features have structure.
  const out = new Float32Array(n * 3 * side * side).fill(1);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < 3; r++) {
      const x0 = Math.floor(rand.uniform() * side);
      const y0 = Math.floor(rand.uniform() * side);
      const x1 = Math.min(side, x0 + 1 + Math.floor(rand.uniform() * side));
      const y1 = Math.min(side, y0 + 1 + Math.floor(rand.uniform() * side));
      const colour = [rand.uniform(), rand.uniform(), rand.uniform()];
      for (let c = 0; c < 3; c++) for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) out[((i * 3 + c) * side + y) * side + x] = colour[c];
    }
  }
  return out;
}

describe('dVAE codebook usage aids', () => {
  it('k-means init: argmax of the new logits = the nearest centroid (float64), every code used, deterministic', () => {
    const images = randomImages(1, 40, 8);
    const a = new Dvae(TINY, { seed: 3 });
    const b = new Dvae(TINY, { seed: 3 });
    try {
      const r = kmeansCodebookInit(a, images, [40, 3, 8, 8], { rng: new Philox(9), samples: 400, logitStd: 4 });
      kmeansCodebookInit(b, images, [40, 3, 8, 8], { rng: new Philox(9), samples: 400, logitStd: 4 });
      assert.strictEqual(r.vectors, 400);
      assert.strictEqual(r.deadCodes, 0);
      assert.ok(r.perplexity > 10, `perplexity ${r.perplexity} of 16`);
      const wa = a.encoder.output.w.toArray();
      assert.deepStrictEqual(wa, b.encoder.output.w.toArray());
      // Recover the centroids c_v = w_v / (2 s) and check b_v = -s |c_v|^2.
      const V = 16;
      const D = a.encoder.output.inChannels;
      const bias = a.encoder.output.b.toArray();
      const centroids = Array.from({ length: V }, (_, v) => Array.from({ length: D }, (_, d) => wa[v * D + d] / (2 * r.scale)));
      for (let v = 0; v < V; v++) {
        const n2 = centroids[v].reduce((s, c) => s + c * c, 0);
        assert.ok(Math.abs(bias[v] + r.scale * n2) <= 1e-4 * Math.max(1, r.scale * n2), `bias ${v}`);
      }
      // On fresh images: the encoder's argmax code is the centroid nearest the cell's features.
      const fresh = randomImages(2, 6, 8);
      const { feats, codes } = noGrad(() =>
        tidy(() => {
          const x = mapPixels(Tensor.from(fresh, [6, 3, 8, 8]), a.eps);
          return { feats: a.encoder.features(x).toArray(), codes: argmaxCodes(a.encoder.forward(x)).toArray() };
        }),
      );
      const cells = 16;
      let checked = 0;
      for (let i = 0; i < 6; i++) {
        for (let p = 0; p < cells; p++) {
          const dist = centroids.map((c) => c.reduce((s, cv, d) => s + (feats[(i * D + d) * cells + p] - cv) ** 2, 0));
          const sorted = [...dist].sort((x, y) => x - y);
          if (sorted[1] - sorted[0] < 1e-4 * (1 + sorted[0])) continue; // a near tie: float32 may pick either
          assert.strictEqual(codes[i * cells + p], dist.indexOf(sorted[0]), `image ${i} cell ${p}`);
          checked++;
        }
      }
      assert.ok(checked > 80, `only ${checked} cells without a near tie`);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('k-means init refuses fewer feature vectors than codes, saying how to fix it', () => {
    const m = new Dvae(TINY, { seed: 3 });
    try {
      assert.throws(() => kmeansCodebookInit(m, randomImages(1, 1, 8), [1, 3, 8, 8], { rng: new Philox(1), samples: 10 }), /at least vocab_size = 16 feature vectors.*codebook_init_images/);
    } finally {
      m.dispose();
    }
  });

  it('straight-through: the value is the one-hot argmax of the sample, the gradient that of the relaxed sample', () => {
    const rand = makeRandom(4);
    const logits = keep(Tensor.from(Float32Array.from({ length: 2 * 16 * 3 * 3 }, () => 3 * rand.normal()), [2, 16, 3, 3]));
    logits.requiresGrad = true; // a leaf, like a parameter
    const weights = keep(Tensor.from(Float32Array.from({ length: 2 * 16 * 3 * 3 }, () => rand.normal()), [2, 16, 3, 3]));
    try {
      const relaxed = tidy(() => {
        const z = gumbelSoftmax(logits, 0.7, new Philox(5));
        backward(sum(mul(z, weights)));
        return { z: z.toArray(), grad: logits.grad!.toArray() };
      });
      zeroGrad([logits]);
      const st = tidy(() => {
        const soft = gumbelSoftmax(logits, 0.7, new Philox(5));
        const z = add(soft, straightThroughShift(soft));
        backward(sum(mul(z, weights)));
        return { z: z.toArray(), grad: logits.grad!.toArray() };
      });
      const hw = 9;
      for (let b = 0; b < 2; b++) {
        for (let p = 0; p < hw; p++) {
          let best = 0;
          for (let v = 1; v < 16; v++) if (relaxed.z[(b * 16 + v) * hw + p] > relaxed.z[(b * 16 + best) * hw + p]) best = v;
          for (let v = 0; v < 16; v++) assert.ok(Math.abs(st.z[(b * 16 + v) * hw + p] - (v === best ? 1 : 0)) < 1e-6);
        }
      }
      assert.deepStrictEqual(st.grad, relaxed.grad);
    } finally {
      logits.dispose();
      weights.dispose();
    }
  });

  it('decoder warm-up: the loss is the reconstruction of the argmax codes, and the encoder gets no gradient', () => {
    const m = new Dvae(TINY, { seed: 8 });
    const x = keep(Tensor.from(randomImages(3, 2, 8), [2, 3, 8, 8]));
    try {
      const r = tidy(() => {
        const out = dvaeLoss(m, x, { tau: 0.5, beta: 1, rng: new Philox(1), encoderFrozen: true });
        backward(out.loss);
        return { loss: out.loss.item(), recon: out.recon.item(), kl: out.kl.item() };
      });
      assert.ok(Math.abs(r.loss - (r.recon + r.kl)) <= 1e-3 * Math.abs(r.loss)); // reported, but the KL has no gradient
      const direct = noGrad(() =>
        tidy(() => {
          const stats = m.decoder.forwardCodes(m.encode(x));
          return sum(logitLaplaceNll(mapPixels(x, m.eps), stats)).item() / 2;
        }),
      );
      assert.ok(Math.abs(r.recon - direct) <= 1e-4 * Math.abs(direct), `recon ${r.recon} vs direct ${direct}`);
      for (const [name, p] of m.namedParameters()) {
        const g = p.grad ? Array.from(p.grad.toArray()) : [];
        const norm = g.reduce((s, v) => s + v * v, 0);
        if (name.startsWith('encoder.')) assert.strictEqual(norm, 0, `${name} has a gradient`);
      }
      assert.ok(m.decoder.input.w.grad && m.decoder.input.w.grad.toArray().some((v) => v !== 0), 'the decoder learns');
      zeroGrad(m.parameters());
    } finally {
      x.dispose();
      m.dispose();
    }
  });
});
