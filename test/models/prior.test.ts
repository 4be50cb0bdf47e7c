// The transformer prior: shapes and parameter names, padText, the loss against a float64 recomputation from the
// logits, causality (a token never changes the logits that predict it or earlier tokens), the layer mask schedule
// reaching attention (a conv-only prior ignores image tokens outside the kernel), KV-cached prefill + step against the
// full forward at every position, and a finite-difference check of the whole model's gradient.
// Key: B = batch, L = text_len, G = grid side, N = G^2, Vt / Vi = text / image vocab, C = d_model.
import * as assert from 'node:assert';
import { Prior, PriorArch, padText, padToken, priorDecays, priorParameterCount } from '../../src/core/models/prior';
import { Philox, Tensor, backward, noGrad, tidy, zeroGrad } from '../../src/core/tensor';
import { native } from '../../src/core/native';

/** Overwrites a parameter's values (outside autograd). */
function setValues(p: Tensor, values: Float32Array): void {
  const t = Tensor.from(values, p.shape);
  native.memcpy(p.address, t.address, 4 * p.size);
  t.dispose();
}

/** Odd sizes everywhere: 5 layers (row, column, row, row, conv), 3 heads of 5, L 5, G 3, Vt 7, Vi 11, kernel 3. */
const TINY: PriorArch = {
  n_layers: 5, n_heads: 3, head_dim: 5, text_len: 5, text_vocab: 7, image_grid: 3, image_vocab: 11, conv_kernel: 3,
};

function randomTokens(rng: Philox, count: number, max: number): Int32Array {
  return rng.randint(count, max);
}

/** A batch of B captions of various lengths (0..L) padded, and B full image grids. */
function batch(m: Prior, B: number, seed: number): { text: Int32Array; image: Int32Array } {
  const rng = new Philox(seed);
  const ids: number[][] = [];
  for (let b = 0; b < B; b++) ids.push([...randomTokens(rng, b % (m.textLen + 1), m.textVocab)]);
  return { text: padText(ids, m.textLen, m.textVocab), image: randomTokens(rng, B * m.imageLen, m.imageVocab) };
}

/** Perturbs the weights away from init so the test is not blind to near-zero paths (biases, gains at 0/1). */
function shake(m: Prior, seed: number): void {
  const rng = new Philox(seed);
  noGrad(() => {
    for (const p of m.parameters()) {
      const host = p.toArray() as Float32Array;
      const noise = rng.fillNormal(new Float32Array(host.length));
      for (let i = 0; i < host.length; i++) host[i] += 0.3 * noise[i];
      setValues(p, host);
    }
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.strictEqual(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe('prior model', () => {
  let model: Prior;
  before(() => {
    model = new Prior(TINY, new Philox(1));
    shake(model, 2);
  });
  after(() => model.dispose());

  it('has the parameters its architecture says, with decay only on linear weights', () => {
    const C = 15;
    const names = new Map(model.namedParameters().map(([n, t]) => [n, t.shape]));
    assert.deepStrictEqual(names.get('text_embedding.weight'), [7 + 5, C]);
    assert.deepStrictEqual(names.get('text_position'), [5, C]);
    assert.deepStrictEqual(names.get('image_embedding.weight'), [11, C]);
    assert.deepStrictEqual(names.get('image_row.weight'), [3, C]);
    assert.deepStrictEqual(names.get('image_col.weight'), [3, C]);
    assert.deepStrictEqual(names.get('blocks.4.attn.q.weight'), [C, C]);
    assert.deepStrictEqual(names.get('blocks.0.mlp.fc.weight'), [4 * C, C]);
    assert.deepStrictEqual(names.get('text_head.weight'), [12, C]);
    assert.deepStrictEqual(names.get('image_head.weight'), [11, C]);
    assert.strictEqual(model.parameterCount(), priorParameterCount(TINY));
    assert.deepStrictEqual(model.layerKinds, ['row', 'column', 'row', 'row', 'conv']);
    const decayed = [...names.keys()].filter(priorDecays).sort();
    const expected = [];
    for (let i = 0; i < 5; i++) {
      for (const n of ['attn.q', 'attn.k', 'attn.v', 'attn.proj', 'mlp.fc', 'mlp.proj']) expected.push(`blocks.${i}.${n}.weight`);
    }
    expected.push('image_head.weight', 'text_head.weight');
    assert.deepStrictEqual(decayed, expected.sort());
  });

  it('pads captions with a token of each empty position, truncates long ones, rejects ids outside the vocabulary', () => {
    assert.deepStrictEqual([...padText([[3, 1], [], [1, 2, 3, 4, 5, 6]], 4, 7)], [3, 1, 9, 10, 7, 8, 9, 10, 1, 2, 3, 4]);
    assert.strictEqual(padToken(2, 7), 9);
    assert.throws(() => padText([[7]], 4, 7), /outside the text vocabulary \[0, 7\)/);
  });

  it('forward gives next-token logits; loss = 1/8 text + 7/8 image mean cross-entropy (float64 recomputation)', () => {
    const B = 3;
    const { text, image } = batch(model, B, 5);
    tidy(() => {
      const t = Tensor.from(text, [B, 5], 'i32');
      const im = Tensor.from(image, [B, 9], 'i32');
      const { textLogits, imageLogits } = model.forward(t, im);
      assert.deepStrictEqual(textLogits.shape, [B, 4, 12]);
      assert.deepStrictEqual(imageLogits.shape, [B, 9, 11]);
      const ce = (logits: Float32Array, V: number, targets: number[]): number => {
        let s = 0;
        targets.forEach((tg, n) => {
          let m = -Infinity;
          for (let v = 0; v < V; v++) m = Math.max(m, logits[n * V + v]);
          let z = 0;
          for (let v = 0; v < V; v++) z += Math.exp(logits[n * V + v] - m);
          s += m + Math.log(z) - logits[n * V + tg];
        });
        return s / targets.length;
      };
      const textTargets: number[] = [];
      for (let b = 0; b < B; b++) for (let p = 1; p < 5; p++) textTargets.push(text[b * 5 + p]);
      const textCe = ce(textLogits.toArray() as Float32Array, 12, textTargets);
      const imageCe = ce(imageLogits.toArray() as Float32Array, 11, [...image]);
      const r = model.loss(t, im, { text: 0.25, image: 0.5 });
      assert.ok(Math.abs(r.textLoss.item() - textCe) < 1e-5, `${r.textLoss.item()} vs ${textCe}`);
      assert.ok(Math.abs(r.imageLoss.item() - imageCe) < 1e-5);
      assert.ok(Math.abs(r.loss.item() - (0.25 * textCe + 0.5 * imageCe)) < 1e-5);
    });
  });

  it('a forward over an image prefix (dense masks) gives the logits of the whole-grid forward (sparse kernel)', () => {
    const B = 2;
    const { text, image } = batch(model, B, 19);
    const run = (n: number) => noGrad(() => tidy(() => {
      const im = new Int32Array(B * n);
      for (let b = 0; b < B; b++) im.set(image.subarray(b * 9, b * 9 + n), b * n);
      const r = model.forward(Tensor.from(text, [B, 5], 'i32'), Tensor.from(im, [B, n], 'i32'));
      return { t: r.textLogits.toArray() as Float32Array, i: r.imageLogits.toArray() as Float32Array };
    }));
    const full = run(9);
    for (const n of [1, 4, 8]) {
      const part = run(n);
      assert.ok(maxAbsDiff(part.t, full.t) < 1e-5);
      for (let b = 0; b < B; b++) {
        assert.ok(maxAbsDiff(part.i.subarray(b * n * 11, (b + 1) * n * 11), full.i.subarray(b * 99, b * 99 + n * 11)) < 1e-5, `n = ${n}`);
      }
    }
  });

  it('is causal: changing a token changes only the logits of later tokens', () => {
    const B = 2;
    const { text, image } = batch(model, B, 7);
    const logits = (tx: Int32Array, im: Int32Array) =>
      noGrad(() => tidy(() => {
        const r = model.forward(Tensor.from(tx, [B, 5], 'i32'), Tensor.from(im, [B, 9], 'i32'));
        return { t: r.textLogits.toArray() as Float32Array, i: r.imageLogits.toArray() as Float32Array };
      }));
    const base = logits(text, image);
    for (const j of [0, 4, 8]) {
      const im2 = Int32Array.from(image);
      im2[j] = (im2[j] + 1) % 11; // batch entry 0, image token j
      const changed = logits(text, im2);
      assert.deepStrictEqual([...changed.t], [...base.t], 'text logits never see image tokens');
      for (let i = 0; i < 9; i++) {
        const row = (x: Float32Array) => x.subarray(i * 11, (i + 1) * 11);
        const d = maxAbsDiff(row(changed.i), row(base.i));
        if (i <= j) assert.strictEqual(d, 0, `image logits ${i} (predicting token ${i}) changed with token ${j}`);
        else assert.ok(d > 1e-6, `image logits ${i} did not see token ${j}`);
      }
      // Batch entry 1 is untouched.
      assert.strictEqual(maxAbsDiff(changed.i.subarray(99), base.i.subarray(99)), 0);
    }
    const t2 = Int32Array.from(text);
    t2[2] = (t2[2] + 1) % 7;
    const changed = logits(t2, image);
    for (let p = 0; p < 4; p++) {
      const d = maxAbsDiff(changed.t.subarray(p * 12, (p + 1) * 12), base.t.subarray(p * 12, (p + 1) * 12));
      if (p < 2) assert.strictEqual(d, 0, `text logits ${p} saw text token 2`);
      else assert.ok(d > 1e-6);
    }
    assert.ok(maxAbsDiff(changed.i.subarray(0, 99), base.i.subarray(0, 99)) > 1e-6, 'every image token sees the text');
  });

  it('applies the layer masks: a one-layer conv prior does not see image tokens outside its kernel', () => {
    // One layer = the conv layer; G 5, kernel 3: token (2, 2) = 12 sees (1, 1), (1, 2), (1, 3), (2, 1) and itself.
    const arch: PriorArch = { ...TINY, n_layers: 1, image_grid: 5, conv_kernel: 3 };
    const m = new Prior(arch, new Philox(3));
    try {
      shake(m, 4);
      assert.deepStrictEqual(m.layerKinds, ['conv']);
      const { text, image } = batch(m, 1, 9);
      const at13 = (im: Int32Array) => noGrad(() => tidy(() =>
        (m.forward(Tensor.from(text, [1, 5], 'i32'), Tensor.from(im, [1, 25], 'i32')).imageLogits.toArray() as Float32Array)
          .slice(13 * 11, 14 * 11))); // logits of token 13 = the output at position 12
      const base = at13(image);
      for (let j = 0; j < 13; j++) {
        const im2 = Int32Array.from(image);
        im2[j] = (im2[j] + 1) % 11;
        const seen = [6, 7, 8, 11, 12].includes(j);
        const d = maxAbsDiff(at13(im2), base);
        assert.strictEqual(d > 0, seen, `token ${j}: ${seen ? 'should' : 'should not'} be seen (diff ${d})`);
      }
    } finally {
      m.dispose();
    }
  });

  it('prefill + step give the full forward logits at every image position (and with an image prefix)', () => {
    const B = 3;
    const { text, image } = batch(model, B, 11);
    const N = model.imageLen;
    const full = noGrad(() => tidy(() =>
      model.forward(Tensor.from(text, [B, 5], 'i32'), Tensor.from(image, [B, N], 'i32')).imageLogits.toArray() as Float32Array));
    const fullAt = (b: number, i: number) => full.subarray((b * N + i) * 11, (b * N + i + 1) * 11);
    // fuse: the cache's one (3C, C) q/k/v projection (the default) or the three Linear layers.
    for (const [prefix, fuse] of [[0, true], [4, true], [0, false]] as const) {
      const cache = model.createCache(B, fuse);
      try {
        const steps: Float32Array[] = [];
        const pre = new Int32Array(B * prefix);
        for (let b = 0; b < B; b++) for (let i = 0; i < prefix; i++) pre[b * prefix + i] = image[b * N + i];
        steps.push(tidy(() => model.prefill(cache, Tensor.from(text, [B, 5], 'i32'),
          prefix > 0 ? Tensor.from(pre, [B, prefix], 'i32') : undefined).toArray() as Float32Array));
        for (let i = prefix; i < N - 1; i++) {
          const tokens = new Int32Array(B);
          for (let b = 0; b < B; b++) tokens[b] = image[b * N + i];
          steps.push(tidy(() => model.step(cache, Tensor.from(tokens, [B], 'i32')).toArray() as Float32Array));
        }
        assert.strictEqual(steps.length, N - prefix);
        steps.forEach((s, k) => {
          for (let b = 0; b < B; b++) {
            const d = maxAbsDiff(s.subarray(b * 11, (b + 1) * 11), fullAt(b, prefix + k));
            assert.ok(d < 1e-5, `prefix ${prefix}, fused q/k/v ${fuse}, image token ${prefix + k}, batch ${b}: cached logits differ by ${d}`);
          }
        });
        assert.throws(() => model.step(cache, Tensor.from(new Int32Array(B), [B], 'i32')), /no next token/);
      } finally {
        cache.dispose();
      }
    }
    // A smaller batch in a bigger cache.
    const cache = model.createCache(5);
    try {
      const s = tidy(() => model.prefill(cache, Tensor.from(text, [B, 5], 'i32')).toArray() as Float32Array);
      assert.ok(maxAbsDiff(s.subarray(0, 11), fullAt(0, 0)) < 1e-5);
    } finally {
      cache.dispose();
    }
  });

  it('the gradient of the loss matches finite differences along a random direction', () => {
    const B = 2;
    const { text, image } = batch(model, B, 13);
    const params = model.parameters();
    const lossAt = () => noGrad(() => tidy(() =>
      model.loss(Tensor.from(text, [B, 5], 'i32'), Tensor.from(image, [B, 9], 'i32')).loss.item()));
    zeroGrad(params);
    tidy(() => backward(model.loss(Tensor.from(text, [B, 5], 'i32'), Tensor.from(image, [B, 9], 'i32')).loss));
    const rng = new Philox(17);
    const dirs = params.map((p) => rng.fillNormal(new Float32Array(p.size)));
    for (const [name, p] of model.namedParameters()) {
      assert.ok(p.grad && maxAbsDiff(p.grad.toArray(), new Float32Array(p.size)) > 0, `${name} got no gradient`);
    }
    let analytic = 0;
    params.forEach((p, k) => {
      const g = p.grad!.toArray();
      for (let i = 0; i < g.length; i++) analytic += g[i] * dirs[k][i];
    });
    const originals = params.map((p) => p.toArray() as Float32Array);
    const setAt = (eps: number) => params.forEach((p, k) => {
      const v = new Float32Array(originals[k]);
      for (let i = 0; i < v.length; i++) v[i] += eps * dirs[k][i];
      setValues(p, v);
    });
    const eps = 1e-3;
    setAt(eps);
    const up = lossAt();
    setAt(-eps);
    const down = lossAt();
    setAt(0);
    const numeric = (up - down) / (2 * eps);
    assert.ok(Math.abs(numeric - analytic) <= 2e-2 * Math.abs(analytic) + 1e-3, `numeric ${numeric} vs analytic ${analytic}`);
    zeroGrad(params);
  });
});
