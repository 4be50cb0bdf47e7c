/**
 * The small CLIP: token packing, the contrastive loss against a float64 reference computed from the model's own
 * embeddings, and a few updates on fixed pairs lowering the loss.
 */
import * as assert from 'node:assert/strict';
import { Clip, ClipArch, clipDecays } from '../../src/core/models/clip/model';
import { diagonalAccuracy } from '../../src/core/train/clip-trainer';
import { AdamW } from '../../src/core/train/adamw';
import { Tensor, backward, noGrad, tidy, zeroGrad } from '../../src/core/tensor';
import { Philox } from '../../src/core/tensor/rng';

const ARCH: ClipArch = { vocab: 13, context: 6, textWidth: 16, textLayers: 2, textHeads: 2, resolution: 8, imageChannels: [4, 8], embed: 8 };

function pairs(B: number, seed: number) {
  const rng = new Philox(seed);
  const words = rng.fillUint32(new Uint32Array(B * 3 * 8 * 8 + B * 5));
  const px = Float32Array.from(words.subarray(0, B * 3 * 64), (w) => w / 2 ** 32);
  const captions = Array.from({ length: B }, (_, b) => Array.from(words.subarray(B * 192 + b * 5, B * 192 + b * 5 + 1 + (b % 5)), (w) => w % 13));
  return { px, captions };
}

describe('eval: small CLIP', () => {
  it('packs tokens: cut to L - 1, end-of-text, zeros after', () => {
    const model = new Clip(ARCH, new Philox(1));
    try {
      assert.deepEqual(Array.from(model.packTokens([3, 4]).row), [3, 4, 13, 0, 0, 0]);
      const long = model.packTokens([1, 2, 3, 4, 5, 6, 7, 8]);
      assert.deepEqual(Array.from(long.row), [1, 2, 3, 4, 5, 13]);
      assert.equal(long.end, 5);
      assert.ok(clipDecays('blocks.0.q.weight') && clipDecays('image.0.w') && !clipDecays('token_embedding') && !clipDecays('logit_scale'));
    } finally {
      model.dispose();
    }
  });

  it('the loss is the symmetric cross-entropy of exp(t) * cosine similarities (float64 reference)', () => {
    const model = new Clip(ARCH, new Philox(2));
    const B = 5; // odd on purpose
    const { px, captions } = pairs(B, 3);
    const packed = captions.map((c) => model.packTokens(c));
    try {
      noGrad(() =>
        tidy(() => {
          const pixels = Tensor.from(px, [B, 3, 8, 8]);
          const tokens = Tensor.from(Int32Array.from(packed.flatMap((p) => Array.from(p.row))), [B, 6], 'i32');
          const ends = packed.map((p) => p.end);
          const ours = model.loss(pixels, tokens, ends).loss.item();
          const img = model.encodeImage(pixels).toArray();
          const txt = model.encodeText(tokens, ends).toArray();
          const E = ARCH.embed;
          const norm = (a: ArrayLike<number>, i: number) => Math.sqrt(Array.from({ length: E }, (_, e) => a[i * E + e] ** 2).reduce((s, v) => s + v, 0));
          const scale = 1 / 0.07;
          const logits = (i: number, j: number) => {
            let s = 0;
            for (let e = 0; e < E; e++) s += img[i * E + e] * txt[j * E + e];
            return (scale * s) / (norm(img, i) * norm(txt, j));
          };
          const ce = (row: (k: number) => number, target: number) => {
            const v = Array.from({ length: B }, (_, k) => row(k));
            const m = Math.max(...v);
            return Math.log(v.reduce((s, x) => s + Math.exp(x - m), 0)) + m - v[target];
          };
          let ref = 0;
          for (let i = 0; i < B; i++) ref += ce((j) => logits(i, j), i) + ce((j) => logits(j, i), i);
          ref /= 2 * B;
          assert.ok(Math.abs(ours - ref) < 1e-4 * Math.max(1, ref), `loss ${ours} vs reference ${ref}`);
          // A caption's features do not depend on the padding after its end-of-text token (causal attention).
          const padded = Int32Array.from(tokens.toArray());
          for (let b = 0; b < B; b++) for (let t = ends[b] + 1; t < 6; t++) padded[b * 6 + t] = 7;
          const again = model.encodeText(Tensor.from(padded, [B, 6], 'i32'), ends).toArray();
          for (let i = 0; i < txt.length; i++) assert.ok(Math.abs(again[i] - txt[i]) < 1e-5, 'padding leaks into the caption');
        }),
      );
    } finally {
      model.dispose();
    }
  });

  it('a few AdamW updates on fixed pairs lower the loss and match them up', () => {
    const model = new Clip(ARCH, new Philox(4));
    const B = 6;
    const { px, captions } = pairs(B, 5);
    const packed = captions.map((c, b) => model.packTokens([...c, b])); // distinct captions
    const named = model.namedParameters();
    const opt = new AdamW([{ params: named.map(([name, tensor]) => ({ name, tensor })) }], { lr: 3e-3, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0 });
    try {
      const losses: number[] = [];
      let accuracy = 0;
      for (let step = 0; step < 60; step++) {
        tidy(() => {
          const pixels = Tensor.from(px, [B, 3, 8, 8]);
          const tokens = Tensor.from(Int32Array.from(packed.flatMap((p) => Array.from(p.row))), [B, 6], 'i32');
          zeroGrad(model.parameters());
          const { loss, logits } = model.loss(pixels, tokens, packed.map((p) => p.end));
          backward(loss);
          opt.update();
          losses.push(loss.item());
          accuracy = diagonalAccuracy(logits.toArray(), B);
        });
      }
      assert.ok(losses[59] < 0.5 * losses[0], `loss ${losses[0]} -> ${losses[59]}`);
      assert.equal(accuracy, 1, 'every image picks its own caption after training on them');
    } finally {
      opt.dispose();
      model.dispose();
    }
  });
});
