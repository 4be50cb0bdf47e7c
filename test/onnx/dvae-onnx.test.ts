// The dVAE exported to ONNX and run through onnxruntime-node: the graphs parse back with the official schema, use
// only the ops listed, and agree with the engine (logits and pixels within 1e-4, the same argmax codes) on fresh random
// images and codes; damaged or foreign .onnx files give errors that name the file and say what to do.
// Key: N = images, C = channels, V = vocab_size, H = image side, h = grid side.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Dvae } from '../../src/core/models/dvae';
import { native } from '../../src/core/native';
import {
  DVAE_DECODER_FILE, DVAE_ENCODER_FILE, OnnxDvae, OnnxModelError, buildDvaeDecoderModel, buildDvaeEncoderModel, decodeModel, encodeModel,
  exportDvaeOnnx,
} from '../../src/core/onnx';
import { Tensor, noGrad, tidy } from '../../src/core/tensor';
import { TEST_SEED, makeRandom } from '../harness/random';

// Two blocks per group (so the second block of a group has no id path) and 3 groups (a pool and an upsample each).
const ARCH = { n_hid: 8, n_groups: 3, n_blk_per_group: 2, vocab_size: 32, n_init: 12, input_channels: 3 } as const;

function randomDvae(seed: number): Dvae {
  const model = new Dvae({ ...ARCH, logit_laplace_eps: 0.1 }, { seed });
  // The released init has zero biases; random ones make the test see every bias in the graphs.
  const rnd = makeRandom(seed + 1);
  for (const [, p] of model.namedParameters()) {
    if (p.rank !== 1) continue;
    const src = Tensor.from(Float32Array.from({ length: p.size }, () => 0.1 * rnd.normal()), p.shape);
    native.cast(p.address, 'f32', src.address, 'f32', p.size);
    src.dispose();
  }
  return model;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('onnx: the dVAE exported and run through onnxruntime-node', function () {
  this.timeout(60000);
  const seed = TEST_SEED;
  let model: Dvae;
  let dir: string;
  let runner: OnnxDvae;

  before(async () => {
    model = randomDvae(seed % 100000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-onnx-test-'));
    exportDvaeOnnx({ model, resolution: 16, checkpoint: 'test', step: 0 }, dir);
    runner = await OnnxDvae.open(dir, { threads: 1 });
  });

  after(async () => {
    await runner?.release();
    model?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes opset-17 graphs that parse back with onnx.proto and use only the listed ops', () => {
    const allowed = new Set(['Conv', 'Relu', 'MaxPool', 'Resize', 'Add', 'Mul', 'Sigmoid', 'Clip', 'ArgMax', 'Cast', 'Gather', 'Transpose', 'Slice', 'Identity']);
    for (const file of [DVAE_ENCODER_FILE, DVAE_DECODER_FILE]) {
      const m = decodeModel(fs.readFileSync(path.join(dir, file)));
      assert.deepEqual(m.opset_import, [{ domain: '', version: 17 }]);
      const ops = new Set(m.graph!.node!.map((n) => n.op_type));
      for (const op of ops) assert.ok(allowed.has(op), `${file}: unexpected op ${op}`);
      // Every parameter of the side is an f32 initializer (the decoder's input conv as a (V, n_init) table).
      const side = file === DVAE_ENCODER_FILE ? 'encoder.' : 'decoder.';
      const params = [...model.namedParameters()].filter(([n]) => n.startsWith(side));
      const weights = m.graph!.initializer!.filter((t) => t.name!.startsWith(side) && t.name !== `${side}post_gain`);
      assert.equal(weights.length, params.length, file);
      const floats = weights.reduce((s, t) => s + t.dims!.reduce((a, b) => a * b, 1), 0);
      assert.equal(floats, params.reduce((s, [, p]) => s + p.size, 0), file);
      for (const t of weights) assert.equal(t.raw_data!.length, 4 * t.dims!.reduce((a, b) => a * b, 1), t.name);
    }
    // encode(decode(x)) is byte-for-byte stable.
    const enc = buildDvaeEncoderModel({ model, resolution: 16, checkpoint: 'test', step: 0 });
    const bytes = encodeModel(enc);
    assert.deepEqual(encodeModel(decodeModel(bytes)), bytes);
  });

  for (const [N, H] of [[3, 16], [2, 12], [1, 28]] as const) {
    it(`encoder: logits within 1e-4 of the engine and the same codes on random ${N}x3x${H}x${H} images (seed ${seed})`, async () => {
      const rnd = makeRandom(seed + H);
      const pixels = Float32Array.from({ length: N * 3 * H * H }, () => rnd.uniform());
      const { logits: want, codes: wantCodes } = noGrad(() => tidy(() => {
        const x = Tensor.from(pixels, [N, 3, H, H]);
        const l = model.logits(x);
        return { logits: l.toArray() as Float32Array, codes: model.encode(x).toArray() as Int32Array };
      }));
      const got = await runner.encodeWithLogits(pixels, N);
      const h = H / 4;
      assert.deepEqual(got.shape, [N, ARCH.vocab_size, h, h]);
      const diff = maxAbsDiff(got.logits, want);
      console.log(`      max |logits onnx - engine| = ${diff.toExponential(2)} (N ${N}, H ${H})`);
      assert.ok(diff < 1e-4, `max abs diff ${diff} (seed ${seed})`);
      // The same codes, except where the engine's top two logits are closer than the two runtimes' difference.
      const V = ARCH.vocab_size;
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < h * h; c++) {
          const i = n * h * h + c;
          if (got.codes[i] === wantCodes[i]) continue;
          const a = want[(n * V + got.codes[i]) * h * h + c];
          const b = want[(n * V + wantCodes[i]) * h * h + c];
          assert.ok(Math.abs(a - b) <= 2 * diff, `code ${got.codes[i]} vs ${wantCodes[i]} at image ${n}, cell ${c} (logits ${a} vs ${b}, seed ${seed})`);
        }
      }
      assert.deepEqual([...(await runner.encode(pixels, N))], [...got.codes]);
    });
  }

  for (const [N, h] of [[3, 4], [2, 3], [1, 7]] as const) {
    it(`decoder: pixels within 1e-4 of the engine on random ${N}x${h}x${h} codes (seed ${seed})`, async () => {
      const rnd = makeRandom(seed + 100 + h);
      const codes = Int32Array.from({ length: N * h * h }, () => rnd.int(0, ARCH.vocab_size));
      const want = noGrad(() => tidy(() => model.decode(Tensor.from(codes, [N, h, h], 'i32')).toArray())) as Float32Array;
      const got = await runner.decode(codes, N);
      assert.equal(got.length, N * 3 * 4 * h * 4 * h);
      const diff = maxAbsDiff(got, want);
      console.log(`      max |pixels onnx - engine| = ${diff.toExponential(2)} (N ${N}, h ${h})`);
      assert.ok(diff < 1e-4, `max abs diff ${diff} (seed ${seed})`);
      assert.ok(got.every((v) => v >= 0 && v <= 1));
    });
  }

  it('decode rejects codes outside the vocabulary before onnxruntime sees them', async () => {
    await assert.rejects(runner.decode(Int32Array.of(0, 1, 32, 3), 1), /code 32 at 2 is outside \[0, 32\)/);
    await assert.rejects(runner.decode(Int32Array.of(0, -1, 2, 3), 1), /code -1 at 1 is outside/);
  });

  describe('foreign and damaged files', () => {
    let bad: string;
    beforeEach(() => {
      bad = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-onnx-bad-'));
      for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(bad, f));
    });
    afterEach(() => fs.rmSync(bad, { recursive: true, force: true }));

    async function openError(): Promise<OnnxModelError> {
      try {
        const r = await OnnxDvae.open(bad);
        await r.release();
      } catch (error) {
        assert.ok(error instanceof OnnxModelError, `not an OnnxModelError: ${error}`);
        assert.ok(error.hint && error.hint.length > 0);
        return error;
      }
      assert.fail('OnnxDvae.open succeeded on a bad export');
    }

    it('a missing file or dvae.json', async () => {
      fs.rmSync(path.join(bad, DVAE_DECODER_FILE));
      assert.match((await openError()).message, /the dVAE decoder: .*dvae-decoder\.onnx does not exist/);
      fs.rmSync(path.join(bad, 'dvae.json'));
      assert.match((await openError()).message, /is not a dVAE export: .*dvae\.json is missing/);
    });

    it('an empty file', async () => {
      fs.writeFileSync(path.join(bad, DVAE_ENCODER_FILE), '');
      const e = await openError();
      assert.match(e.message, /the dVAE encoder: .*dvae-encoder\.onnx is empty \(0 bytes\)/);
      assert.match(e.hint!, /dalle export --dvae RUN --out DIR/);
    });

    it('a truncated file', async () => {
      const file = path.join(bad, DVAE_ENCODER_FILE);
      const bytes = fs.readFileSync(file);
      fs.writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
      assert.match((await openError()).message, /dvae-encoder\.onnx \(\d+ bytes\) is not an ONNX model: protobuf parsing failed/);
    });

    it('a file of another format', async () => {
      fs.writeFileSync(path.join(bad, DVAE_DECODER_FILE), Buffer.from('\x89PNG\r\n\x1a\n this is not a model at all'));
      assert.match((await openError()).message, /the dVAE decoder: .*dvae-decoder\.onnx .*is not an ONNX model/);
    });

    it('the decoder where the encoder should be, and a graph without the expected input', async () => {
      fs.copyFileSync(path.join(dir, DVAE_DECODER_FILE), path.join(bad, DVAE_ENCODER_FILE));
      assert.match((await openError()).message, /dvae-encoder\.onnx is a dvae-decoder graph, not dvae-encoder/);
      // A foreign model (no dalle metadata) is checked by its inputs and outputs.
      const foreign = decodeModel(fs.readFileSync(path.join(dir, DVAE_DECODER_FILE)));
      foreign.metadata_props = [];
      fs.writeFileSync(path.join(bad, DVAE_ENCODER_FILE), encodeModel(foreign));
      assert.match((await openError()).message, /dvae-encoder\.onnx has no input named "pixels" \(its inputs: codes\)/);
    });

    it('a graph onnxruntime rejects', async () => {
      const m = decodeModel(fs.readFileSync(path.join(dir, DVAE_ENCODER_FILE)));
      m.graph!.node!.find((n) => n.op_type === 'Conv')!.op_type = 'NoSuchOp';
      fs.writeFileSync(path.join(bad, DVAE_ENCODER_FILE), encodeModel(m));
      assert.match((await openError()).message, /the dVAE encoder: onnxruntime .* cannot load .*dvae-encoder\.onnx: .*NoSuchOp/);
    });

    it('an export of another architecture', async () => {
      await assert.rejects(OnnxDvae.open(dir, { expectArch: { ...ARCH, vocab_size: 64 } }), /is not the one given with --dvae \(vocab_size 32 vs 64\)/);
    });
  });
});
