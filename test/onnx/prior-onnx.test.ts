// The prior exported to ONNX with a key/value cache and run through onnxruntime-node: prefill (with and without an
// image prefix) and every step to the end of the grid give the engine's logits within 1e-4, on a random prior whose
// layers use all three mask kinds (row, column, conv), with fresh random captions and tokens.
// Key: B = batch, L = text_len, N = image_grid^2, Vi = image_vocab.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Prior, PriorArch, padText } from '../../src/core/models/prior';
import { native } from '../../src/core/native';
import { OnnxPrior, decodeModel, exportPriorOnnx } from '../../src/core/onnx';
import { Philox, Tensor, tidy } from '../../src/core/tensor';
import { TEST_SEED, makeRandom } from '../harness/random';

// 5 layers: row, column, row, row, conv. Odd sizes everywhere.
const ARCH: PriorArch = {
  n_layers: 5, n_heads: 3, head_dim: 5, text_len: 5, text_vocab: 7, image_grid: 3, image_vocab: 11, conv_kernel: 3,
} as PriorArch;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('onnx: the prior exported with a KV cache and run through onnxruntime-node', function () {
  this.timeout(60000);
  const seed = TEST_SEED;
  let model: Prior;
  let dir: string;
  let runner: OnnxPrior;

  before(async () => {
    model = new Prior(ARCH, new Philox(seed % 100000));
    // Layer-norm gains are 1 and biases 0 at init: random ones make the test see every one of them in the graph.
    // Matrices and embeddings are scaled up from the init's std 0.02 to about 0.4, so attention is far from uniform
    // and a wrong mask, position or head layout moves the logits by much more than the tolerance.
    const rnd = makeRandom(seed + 1);
    for (const [, p] of model.namedParameters()) {
      const values = p.rank === 1
        ? Float32Array.from({ length: p.size }, () => 1 + 0.2 * rnd.normal())
        : Float32Array.from(p.toArray() as Float32Array, (v) => 20 * v);
      const src = Tensor.from(values, p.shape);
      native.cast(p.address, 'f32', src.address, 'f32', p.size);
      src.dispose();
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-onnx-prior-'));
    exportPriorOnnx({ model, arch: ARCH, checkpoint: 'test', step: 0 }, dir);
    runner = await OnnxPrior.open(dir, { threads: 1, expectArch: ARCH });
  });

  after(async () => {
    await runner?.release();
    model?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes one opset-17 graph with past and present keys and values of every layer', () => {
    const m = decodeModel(fs.readFileSync(path.join(dir, 'prior.onnx')));
    assert.deepEqual(m.opset_import, [{ domain: '', version: 17 }]);
    assert.deepEqual(m.graph!.input!.map((v) => v.name), ['input_ids', ...[0, 1, 2, 3, 4].flatMap((i) => [`past_key_${i}`, `past_value_${i}`])]);
    assert.deepEqual(m.graph!.output!.map((v) => v.name), ['logits', ...[0, 1, 2, 3, 4].flatMap((i) => [`present_key_${i}`, `present_value_${i}`])]);
    const masks = m.graph!.initializer!.filter((t) => t.name!.startsWith('mask_')).map((t) => t.name).sort();
    assert.deepEqual(masks, ['mask_column', 'mask_conv', 'mask_row']);
  });

  for (const [B, m] of [[2, 0], [3, 4], [1, 7]] as const) {
    it(`prefill (${B} rows, ${m} prompt tokens) and every step to the end agree with the engine within 1e-4 (seed ${seed})`, async () => {
      const rnd = makeRandom(seed + 10 * B + m);
      const N = ARCH.image_grid ** 2;
      const captions = Array.from({ length: B }, () => Array.from({ length: rnd.int(0, ARCH.text_len + 1) }, () => rnd.int(0, ARCH.text_vocab)));
      const text = padText(captions, ARCH.text_len, ARCH.text_vocab);
      const prefix = Int32Array.from({ length: B * m }, () => rnd.int(0, ARCH.image_vocab));
      const engineCache = model.createCache(B);
      const onnxCache = runner.createCache(B);
      let worst = 0;
      try {
        const textT = Tensor.from(text, [B, ARCH.text_len], 'i32');
        const prefixT = m > 0 ? Tensor.from(prefix, [B, m], 'i32') : undefined;
        let want = tidy(() => model.prefill(engineCache, textT, prefixT).toArray() as Float32Array);
        let got = await runner.prefill(onnxCache, textT, prefixT);
        assert.deepEqual(got.shape, [B, ARCH.image_vocab]);
        for (let t = m; ; t++) {
          const gotData = got.toArray() as Float32Array;
          got.dispose();
          const diff = maxAbsDiff(gotData, want);
          worst = Math.max(worst, diff);
          assert.ok(diff < 1e-4, `image position ${t}: max abs diff ${diff} (seed ${seed})`);
          if (t === N - 1) break;
          const tokens = Tensor.from(Int32Array.from({ length: B }, () => rnd.int(0, ARCH.image_vocab)), [B], 'i32');
          want = tidy(() => model.step(engineCache, tokens).toArray() as Float32Array);
          got = await runner.step(onnxCache, tokens);
          tokens.dispose();
        }
        textT.dispose();
        prefixT?.dispose();
        assert.equal(onnxCache.length, ARCH.text_len + N - 1);
        console.log(`      max |logits onnx - engine| over ${N - m} positions = ${worst.toExponential(2)} (B ${B}, prompt ${m})`);
        await assert.rejects(runner.step(onnxCache, Tensor.from([0], [1], 'i32')), /cache made for|last one has no next token/);
      } finally {
        engineCache.dispose();
        onnxCache.dispose();
      }
    });
  }

  it('step before prefill and tokens outside the vocabulary are errors', async () => {
    const cache = runner.createCache(1);
    await assert.rejects(runner.step(cache, Tensor.from([1], [1], 'i32')), /prefill the cache with a caption first/);
    const text = Tensor.from(padText([[1, 2]], ARCH.text_len, ARCH.text_vocab), [1, ARCH.text_len], 'i32');
    await assert.rejects(runner.prefill(cache, text, Tensor.from([11], [1, 1], 'i32')), /image token 11 is outside \[0, 11\)/);
    (await runner.prefill(cache, text)).dispose();
    await assert.rejects(runner.step(cache, Tensor.from([-1], [1], 'i32')), /image token -1 is outside/);
    text.dispose();
  });

  it('an export of another prior is refused', async () => {
    await assert.rejects(OnnxPrior.open(dir, { expectArch: { ...ARCH, image_vocab: 12 } }), /not the one given \(image_vocab 11 vs 12\)/);
  });
});
