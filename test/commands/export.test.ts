/**
 * `dalle export --dvae` and `--runtime onnx` in `dalle encode` / `dalle decode`, as a user runs them: train a tiny dVAE,
 * export it, then encode and decode with onnxruntime (exported on the fly, and from the export folder) and compare the
 * token grids and PNGs with the engine's; damaged exports and wrong flags give clear errors and exit codes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { loadDvae } from '../../src/core/models/dvae/load';
import { readNpySync, writeNpySync } from '../../src/core/io/npy';
import { decodeModel } from '../../src/core/onnx';
import { decodeImage, rgbToChw } from '../../src/core/data/image';
import { Tensor, noGrad, tidy } from '../../src/core/tensor';
import { trainTinyDvaeRun } from '../harness/tiny-dvae-run';
import { writeTinyConfig } from './helpers';
import { writeRandomPriorRun } from '../harness/random-prior-run';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** A prior run directory (config.yaml, tokenizer.json, checkpoints/step-0, latest) with random weights. */
async function makePriorRun(dir: string): Promise<string> {
  return writeRandomPriorRun(dir, { captions: ['red apple, noto style', 'blue sky, twemoji style', 'green square'], vocabSize: 280, layers: 3, grid: 4, sets: ['runtime.seed=3'] });
}

async function pngPixels(file: string): Promise<Uint8Array> {
  return new Uint8Array(await sharp(file).removeAlpha().raw().toBuffer());
}

describe('commands: export and --runtime onnx', function () {
  this.timeout(60000);
  let work: string;
  let images: string;
  let run: string;
  let exported: string;

  before(async () => {
    ({ work, images, run } = await trainTinyDvaeRun('dalle-onnx-cmd-', 9));
    exported = path.join(work, 'onnx');
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('export writes the encoder and decoder graphs and checks them against the engine', async () => {
    const { error, stdout } = await dalle(['export', '--dvae', run, '--out', exported, '--json']);
    assert.equal(error, undefined, error?.message);
    const result = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.deepEqual(fs.readdirSync(exported).sort(), ['dvae-decoder.onnx', 'dvae-encoder.onnx', 'dvae.json']);
    assert.equal(result.dvae.step, 8);
    assert.equal(result.prior, undefined);
    assert.equal(result.dvae.bytes.encoder, fs.statSync(path.join(exported, 'dvae-encoder.onnx')).size);
    assert.ok(result.dvae.check.logitsMaxAbsDiff < 1e-4, `logits ${result.dvae.check.logitsMaxAbsDiff}`);
    assert.ok(result.dvae.check.pixelsMaxAbsDiff < 1e-4, `pixels ${result.dvae.check.pixelsMaxAbsDiff}`);
    assert.equal(result.dvae.check.resolution, 16);
    const info = JSON.parse(fs.readFileSync(path.join(exported, 'dvae.json'), 'utf8'));
    assert.equal(info.arch.vocab_size, 16);
    assert.equal(info.step, 8);
    const model = decodeModel(fs.readFileSync(path.join(exported, 'dvae-encoder.onnx')));
    assert.deepEqual(model.graph!.input!.map((v) => v.name), ['pixels']);
    assert.deepEqual(model.graph!.output!.map((v) => v.name), ['logits', 'codes']);

    const plain = await dalle(['export', '--dvae', run, '--out', path.join(work, 'onnx-nocheck'), '--no-check']);
    assert.equal(plain.error, undefined, plain.error?.message);
    assert.match(plain.stdout, /dvae-encoder\.onnx \([\d.]+ MiB\)/);
    assert.doesNotMatch(plain.stdout, /onnxruntime vs engine/);
  });

  it('encode --runtime onnx writes the engine\'s token grids, on the fly and from the export', async () => {
    const engineOut = path.join(work, 'engine.npy');
    const onnxOut = path.join(work, 'onnx.npy');
    const dirOut = path.join(work, 'onnx-dir.npy');
    const e = await dalle(['encode', '--dvae', run, images, '--out', engineOut]);
    assert.equal(e.error, undefined, e.error?.message);
    const o = await dalle(['encode', '--dvae', run, images, '--out', onnxOut, '--runtime', 'onnx', '--batch-size', '4']);
    assert.equal(o.error, undefined, o.error?.message);
    const d = await dalle(['encode', '--dvae', run, images, '--out', dirOut, '--runtime', 'onnx', '--onnx', exported]);
    assert.equal(d.error, undefined, d.error?.message);
    const engine = readNpySync(engineOut).data as Int32Array;
    const onnx = readNpySync(onnxOut);
    assert.equal(onnx.dtype, 'i32');
    assert.deepEqual(onnx.shape, [9, 8, 8]);
    assert.deepEqual([...(readNpySync(dirOut).data as Int32Array)], [...(onnx.data as Int32Array)]);
    assert.deepEqual(fs.readFileSync(path.join(work, 'onnx.inputs.txt'), 'utf8'), fs.readFileSync(path.join(work, 'engine.inputs.txt'), 'utf8'));
    // The same codes, except where the engine's two best logits are within float error of each other.
    const got = onnx.data as Int32Array;
    const differing = [...got.keys()].filter((i) => got[i] !== engine[i]);
    if (differing.length > 0) {
      const dvae = loadDvae(run);
      try {
        const files = fs.readdirSync(images).filter((f) => f.endsWith('.png')).sort();
        for (const i of differing) {
          const n = Math.floor(i / 64);
          const rgb = await decodeImage(path.join(images, files[n]), { resolution: 16, maxInputPixels: 1e6 });
          const x = new Float32Array(3 * 16 * 16);
          rgbToChw(rgb, 16, x, 0);
          const logits = noGrad(() => tidy(() => dvae.model.logits(Tensor.from(x, [1, 3, 16, 16])).toArray())) as Float32Array;
          const cell = i % 64;
          const gap = Math.abs(logits[got[i] * 64 + cell] - logits[engine[i] * 64 + cell]);
          assert.ok(gap < 1e-4, `grid ${n} cell ${cell}: onnx code ${got[i]}, engine ${engine[i]}, logit gap ${gap}`);
        }
      } finally {
        dvae.model.dispose();
      }
    }
  });

  it('decode --runtime onnx writes the engine\'s PNGs (to within one 8-bit level)', async () => {
    const tokens = path.join(work, 'codes.npy');
    writeNpySync(tokens, { dtype: 'i32', shape: [5, 8, 8], data: new Int32Array(5 * 64).map((_, i) => (i * 7 + (i >> 3)) % 16) });
    const engineDir = path.join(work, 'dec-engine');
    const onnxDir = path.join(work, 'dec-onnx');
    const e = await dalle(['decode', '--dvae', run, tokens, '--out', engineDir]);
    assert.equal(e.error, undefined, e.error?.message);
    const o = await dalle(['decode', '--dvae', run, tokens, '--out', onnxDir, '--runtime', 'onnx', '--onnx', exported, '--batch-size', '2', '--grid']);
    assert.equal(o.error, undefined, o.error?.message);
    assert.match(o.stdout, /5 images in .*dec-onnx \(contact sheet/);
    let differing = 0;
    for (let n = 0; n < 5; n++) {
      const name = `${String(n).padStart(6, '0')}.png`;
      const a = await pngPixels(path.join(engineDir, name));
      const b = await pngPixels(path.join(onnxDir, name));
      assert.equal(a.length, 16 * 16 * 3);
      assert.equal(b.length, a.length);
      for (let i = 0; i < a.length; i++) {
        assert.ok(Math.abs(a[i] - b[i]) <= 1, `${name} byte ${i}: ${a[i]} vs ${b[i]}`);
        if (a[i] !== b[i]) differing++;
      }
    }
    // Pixels differ by ~1e-7 before quantisation, so a level changes only at a rounding boundary: rarely.
    assert.ok(differing <= 5, `${differing} of ${5 * 768} bytes differ`);
  });

  it('export --prior writes prior.onnx with its K/V inputs and outputs and checks it step by step against the engine', async () => {
    const priorRun = await makePriorRun(path.join(work, 'runs', 'prior'));
    const out = path.join(work, 'onnx-both');
    const { error, stdout } = await dalle(['export', '--dvae', run, '--prior', priorRun, '--out', out, '--json']);
    assert.equal(error, undefined, error?.message);
    const result = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.deepEqual(fs.readdirSync(out).sort(), ['dvae-decoder.onnx', 'dvae-encoder.onnx', 'dvae.json', 'prior.json', 'prior.onnx']);
    assert.equal(result.prior.step, 0);
    assert.equal(result.prior.check.positions, 16);
    assert.ok(result.prior.check.logitsMaxAbsDiff < 1e-4, `prior logits ${result.prior.check.logitsMaxAbsDiff}`);
    const info = JSON.parse(fs.readFileSync(path.join(out, 'prior.json'), 'utf8'));
    assert.equal(info.imageIdOffset, 306);
    assert.deepEqual(info.layerKinds, ['row', 'column', 'conv']);

    const none = await dalle(['export', '--out', out]);
    assert.equal(none.error?.oclif?.exit, 2);
    assert.match(none.error?.message ?? '', /nothing to export: give --dvae RUN, --prior RUN, or both/);
    const swapped = await dalle(['export', '--prior', run, '--out', out]);
    assert.equal(swapped.error?.name, 'CheckpointError');
    assert.match(swapped.error?.message ?? '', /is a dvae checkpoint, not a prior/);
  });

  it('a damaged export, an export of another dVAE, and --onnx without --runtime onnx are clear errors', async () => {
    const bad = path.join(work, 'onnx-bad');
    fs.cpSync(exported, bad, { recursive: true });
    const file = path.join(bad, 'dvae-decoder.onnx');
    fs.writeFileSync(file, fs.readFileSync(file).subarray(0, 100));
    const tokens = path.join(work, 'codes.npy');
    const r = await dalle(['decode', '--dvae', run, tokens, '--out', path.join(work, 'dec-bad'), '--runtime', 'onnx', '--onnx', bad]);
    assert.equal(r.error?.name, 'OnnxModelError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /the dVAE decoder: .*onnx-bad\/dvae-decoder\.onnx \(100 bytes\) is not an ONNX model: protobuf parsing failed/);

    const other = path.join(work, 'onnx-other');
    fs.cpSync(exported, other, { recursive: true });
    const infoFile = path.join(other, 'dvae.json');
    const info = JSON.parse(fs.readFileSync(infoFile, 'utf8'));
    info.arch.vocab_size = 32;
    fs.writeFileSync(infoFile, JSON.stringify(info));
    const o = await dalle(['encode', '--dvae', run, images, '--out', path.join(work, 'other.npy'), '--runtime', 'onnx', '--onnx', other]);
    assert.equal(o.error?.name, 'OnnxModelError');
    assert.match(o.error?.message ?? '', /not the one given with --dvae \(vocab_size 32 vs 16\)/);
    assert.ok(!fs.existsSync(path.join(work, 'other.npy')));

    const flags = await dalle(['encode', '--dvae', run, images, '--out', path.join(work, 'x.npy'), '--onnx', exported]);
    assert.equal(flags.error?.oclif?.exit, 2);
    assert.match(flags.error?.message ?? '', /--onnx DIR needs --runtime onnx/);
  });

  it('export writes only into a new, empty or own folder: another export (a Hugging Face CLIP) is refused untouched', async () => {
    const hf = path.join(work, 'hf-clip');
    fs.mkdirSync(hf);
    const theirs: Record<string, string> = { 'config.json': '{"model_type": "clip"}\n', 'text_model.onnx': 'their graph', 'tokenizer.json': '{}\n' };
    for (const [name, text] of Object.entries(theirs)) fs.writeFileSync(path.join(hf, name), text);
    const r = await dalle(['export', '--dvae', run, '--out', hf]);
    assert.equal(r.error?.name, 'OutputPathError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /--out .*hf-clip is not empty and was not written by dalle export \(it has no dvae\.json or prior\.json or config\.json\): it holds config\.json, text_model\.onnx, tokenizer\.json/);
    assert.deepEqual(fs.readdirSync(hf).sort(), Object.keys(theirs).sort());
    for (const [name, text] of Object.entries(theirs)) assert.equal(fs.readFileSync(path.join(hf, name), 'utf8'), text, name);

    // Its own folder is written again (the files replaced).
    const again = await dalle(['export', '--dvae', run, '--out', exported, '--no-check']);
    assert.equal(again.error, undefined, again.error?.message);
  });

  it('--onnx DIR exported from another dVAE of the same architecture is refused by encode and decode, naming both', async () => {
    // A second run of the same config with another seed: same architecture, other weights.
    const otherRun = path.join(work, 'runs', 'tiny-seed-7');
    const trained = await dalle(['train-dvae', '--config', writeTinyConfig(work), '--data', images, '--out', otherRun, '--seed', '7']);
    assert.equal(trained.error, undefined, trained.error?.message);
    const otherExport = path.join(work, 'onnx-seed-7');
    const made = await dalle(['export', '--dvae', otherRun, '--out', otherExport, '--no-check']);
    assert.equal(made.error, undefined, made.error?.message);

    const tokensOut = path.join(work, 'mixed.npy');
    const e = await dalle(['encode', '--dvae', run, images, '--out', tokensOut, '--runtime', 'onnx', '--onnx', otherExport]);
    assert.equal(e.error?.name, 'OnnxModelError');
    assert.equal(e.error?.oclif?.exit, 4);
    assert.match(e.error?.message ?? '', /the dVAE exported in .*onnx-seed-7 \(from .*tiny-seed-7.*step-8, update 8\) is not the dVAE given \(.*runs\/tiny\/checkpoints\/step-8, update 8\): their weights differ/);
    assert.match(((e.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /dalle export --dvae .*runs\/tiny.* --out .*onnx-seed-7.*leave --onnx out/);
    assert.ok(!fs.existsSync(tokensOut), 'nothing written');

    const tokens = path.join(work, 'codes.npy');
    const decoded = path.join(work, 'dec-mixed');
    const d = await dalle(['decode', '--dvae', run, tokens, '--out', decoded, '--runtime', 'onnx', '--onnx', otherExport]);
    assert.equal(d.error?.oclif?.exit, 4);
    assert.match(d.error?.message ?? '', /is not the dVAE given .*their weights differ/);
    assert.ok(!fs.existsSync(path.join(decoded, '000000.png')), 'no PNG written');

    // dvae.json records the digest of the weights exported.
    assert.match(JSON.parse(fs.readFileSync(path.join(otherExport, 'dvae.json'), 'utf8')).weightsSha256, /^[0-9a-f]{64}$/);
    // The export of the run itself is still accepted.
    const same = await dalle(['encode', '--dvae', run, images, '--out', path.join(work, 'same.npy'), '--runtime', 'onnx', '--onnx', exported]);
    assert.equal(same.error, undefined, same.error?.message);
  });

  it('an export that records no weights digest (an older dalle) cannot be checked: refused, saying what to do', async () => {
    const old = path.join(work, 'onnx-old');
    fs.cpSync(exported, old, { recursive: true });
    const infoFile = path.join(old, 'dvae.json');
    const { weightsSha256: _dropped, ...info } = JSON.parse(fs.readFileSync(infoFile, 'utf8'));
    fs.writeFileSync(infoFile, JSON.stringify(info));
    const out = path.join(work, 'old.npy');
    const r = await dalle(['encode', '--dvae', run, images, '--out', out, '--runtime', 'onnx', '--onnx', old]);
    assert.equal(r.error?.name, 'OnnxModelError');
    assert.equal(r.error?.oclif?.exit, 4);
    assert.match(r.error?.message ?? '', /onnx-old\/dvae\.json does not record the weights .* so it cannot be checked against the dVAE given/);
    assert.match(((r.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /export it again: dalle export --dvae .* --out .*onnx-old; or leave --onnx out/);
    assert.ok(!fs.existsSync(out));
  });
});
