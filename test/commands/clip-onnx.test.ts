/**
 * The CLIP as a user trains, exports and scores it: `dalle train-clip --val` (validation retrieval in metrics.jsonl,
 * RUN/best), `dalle export --clip` (Hugging Face-style ONNX folder, checked against the engine), and `dalle evaluate
 * clip-score --clip DIR` giving the run's numbers from the export (within 1e-4), also from optimum's single-graph
 * layout; folders with a missing or mismatched file fail with messages that name it. On a tiny folder of captioned
 * squares (a few updates: checks files, agreement and errors, not quality).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { loadClip } from '../../src/core/models/clip/load';
import { encodeModel } from '../../src/core/onnx/proto';
import { buildClipCombinedModel, buildClipTextModel } from '../../src/core/onnx/clip-export';
import { temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const COLOURS: Record<string, [number, number, number]> = { red: [230, 20, 20], green: [20, 200, 40], blue: [30, 40, 220], yellow: [240, 220, 30], black: [10, 10, 10], purple: [150, 40, 200] };

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** 12 captioned 20x20 images: a coloured square on white, 'a big red square' etc. */
async function makeCaptioned(dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  let i = 0;
  for (const [name, rgb] of Object.entries(COLOURS)) {
    for (const size of [8, 14]) {
      const pixels = Buffer.alloc(20 * 20 * 3, 255);
      for (let y = 3; y < 3 + size; y++) for (let x = 3; x < 3 + size; x++) for (let c = 0; c < 3; c++) pixels[(y * 20 + x) * 3 + c] = rgb[c];
      const id = String(i++).padStart(3, '0');
      await sharp(pixels, { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(path.join(dir, `${id}.png`));
      fs.writeFileSync(path.join(dir, `${id}.txt`), `a ${size > 10 ? 'big' : 'small'} ${name} square\n`);
    }
  }
  return dir;
}

function lastJson(stdout: string): Record<string, any> {
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('commands: train-clip --val -> export --clip -> evaluate clip-score --clip DIR', function () {
  this.timeout(180000);
  let work: string;
  let data: string;
  let run: string;
  let onnxDir: string;

  before(async () => {
    work = temporaryDir('dalle-clip-onnx-');
    data = await makeCaptioned(path.join(work, 'pairs'));
    run = path.join(work, 'runs', 'clip');
    const trained = await dalle(['train-clip', '--data', data, '--val', data, '--val-pool', '4', '--eval-every', '2', '--out', run, '--steps', '5', '--batch-size', '6', '--vocab', '270', '--resolution', '16', '--checkpoint-every', '0', '--threads', '1', '--lr', '3e-3']);
    assert.equal(trained.error, undefined, trained.error?.message);
    assert.match(trained.stdout, /trained 5 updates .*; best on --val: update \d, text->image top-1 \d+\.\d%/);
    onnxDir = path.join(work, 'onnx');
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('train-clip --val logs validation retrieval and points RUN/best at the best checkpoint, which --clip RUN opens', () => {
    const lines = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const val = lines.filter((l) => l.split === 'val');
    assert.deepEqual(val.map((l) => l.step), [2, 4, 5]);
    for (const l of val) {
      assert.equal(l.val_pairs, 12);
      assert.ok(l.val_t2i_top1 >= 0 && l.val_t2i_top1 <= 1 && Number.isInteger(l.val_t2i_top1 * 12), `top-1 ${l.val_t2i_top1}`);
    }
    // The best is the first step with the highest top-1 (a later tie does not replace it).
    const top = Math.max(...val.map((l) => l.val_t2i_top1));
    const bestStep = val.find((l) => l.val_t2i_top1 === top)!.step;
    assert.deepEqual(val.filter((l) => l.best).map((l) => l.step).pop(), bestStep);
    assert.equal(fs.readFileSync(path.join(run, 'best'), 'utf8').trim(), `checkpoints/step-${bestStep}`);
    const clip = loadClip(run);
    try {
      assert.equal(clip.step, bestStep);
    } finally {
      clip.model.dispose();
    }
    // The final checkpoint is kept too (the latest), with the best.
    assert.ok(fs.existsSync(path.join(run, 'checkpoints', 'step-5')));
    assert.ok(fs.existsSync(path.join(run, 'checkpoints', `step-${bestStep}`)));
  });

  it('export --clip writes the Hugging Face-style folder and checks it against the engine', async () => {
    const { error, stdout } = await dalle(['export', '--clip', run, '--out', onnxDir, '--threads', '1', '--json']);
    assert.equal(error, undefined, error?.message);
    const r = lastJson(stdout);
    assert.ok(r.clip.check.textMaxAbsDiff < 1e-4 && r.clip.check.imageMaxAbsDiff < 1e-4, JSON.stringify(r.clip.check));
    for (const f of ['text_model.onnx', 'vision_model.onnx', 'tokenizer.json', 'preprocessor_config.json', 'config.json']) assert.ok(fs.existsSync(path.join(onnxDir, f)), f);
    const pre = JSON.parse(fs.readFileSync(path.join(onnxDir, 'preprocessor_config.json'), 'utf8'));
    assert.deepEqual(pre.crop_size, { height: 16, width: 16 });
    assert.deepEqual(pre.image_mean, [0.5, 0.5, 0.5]);
    assert.deepEqual(pre.image_std, [0.25, 0.25, 0.25]);
    const config = JSON.parse(fs.readFileSync(path.join(onnxDir, 'config.json'), 'utf8'));
    assert.ok(config.logit_scale > 1 && config.logit_scale <= 100, `logit_scale ${config.logit_scale}`);
    assert.equal(config.text_config.eos_token_id, 270);
    const tok = JSON.parse(fs.readFileSync(path.join(onnxDir, 'tokenizer.json'), 'utf8'));
    assert.deepEqual(tok.added_tokens.map((t: { id: number; content: string }) => [t.id, t.content]), [[270, '<|endoftext|>']]);
  });

  it('evaluate clip-score --clip DIR gives the run\'s numbers from the export, and from optimum\'s model.onnx layout', async () => {
    const fromRun = lastJson((await dalle(['evaluate', 'clip-score', '--clip', run, '--data', data, '--pool', '4', '--json'])).stdout);
    const exported = await dalle(['evaluate', 'clip-score', '--clip', onnxDir, '--data', data, '--pool', '4', '--json']);
    assert.equal(exported.error, undefined, exported.error?.message);
    const fromOnnx = lastJson(exported.stdout);
    assert.equal(fromOnnx.pairs, 12);
    assert.ok(Math.abs(fromOnnx.clipScore - fromRun.clipScore) < 1e-4 * 100, `${fromOnnx.clipScore} vs ${fromRun.clipScore}`);
    assert.equal(fromOnnx.textToImageTop1, fromRun.textToImageTop1);
    assert.equal(fromOnnx.imageToTextTop1, fromRun.imageToTextTop1);
    // optimum's single graph: model.onnx with both towers, no separate files.
    const combined = path.join(work, 'combined');
    fs.mkdirSync(combined);
    for (const f of ['tokenizer.json', 'preprocessor_config.json', 'config.json']) fs.copyFileSync(path.join(onnxDir, f), path.join(combined, f));
    const clip = loadClip(run);
    try {
      fs.writeFileSync(path.join(combined, 'model.onnx'), encodeModel(buildClipCombinedModel({ model: clip.model, tokenizer: clip.tokenizer, tokenizerFile: clip.tokenizerFile, checkpoint: clip.checkpoint, step: clip.step })));
    } finally {
      clip.model.dispose();
    }
    const single = await dalle(['evaluate', 'clip-score', '--clip', combined, '--data', data, '--pool', '4', '--json']);
    assert.equal(single.error, undefined, single.error?.message);
    const fromSingle = lastJson(single.stdout);
    assert.ok(Math.abs(fromSingle.clipScore - fromRun.clipScore) < 1e-2, `${fromSingle.clipScore} vs ${fromRun.clipScore}`);
    assert.equal(fromSingle.textToImageTop1, fromRun.textToImageTop1);
  });

  it('a folder with a missing or mismatched file fails with a message that names it', async () => {
    const broken = (name: string, change: (dir: string) => void): string => {
      const dir = path.join(work, name);
      fs.cpSync(onnxDir, dir, { recursive: true });
      change(dir);
      return dir;
    };
    const score = async (dir: string) => (await dalle(['evaluate', 'clip-score', '--clip', dir, '--data', data, '--pool', '4'])).error?.message ?? '';
    assert.match(await score(broken('no-vision', (d) => fs.rmSync(path.join(d, 'vision_model.onnx')))), /has text_model\.onnx but no vision_model\.onnx/);
    assert.match(await score(broken('no-tokenizer', (d) => fs.rmSync(path.join(d, 'tokenizer.json')))), /no tokenizer\.json/);
    assert.match(await score(broken('no-preprocessor', (d) => fs.rmSync(path.join(d, 'preprocessor_config.json')))), /no preprocessor_config\.json/);
    // The text graph where the vision graph should be.
    assert.match(
      await score(broken('swapped', (d) => fs.copyFileSync(path.join(d, 'text_model.onnx'), path.join(d, 'vision_model.onnx')))),
      /the CLIP vision model: .*vision_model\.onnx has no input named "pixel_values" \(its inputs: input_ids, attention_mask\)/,
    );
    // A preprocessor for another image size than the graph's.
    assert.match(
      await score(broken('size', (d) => {
        const f = path.join(d, 'preprocessor_config.json');
        const pre = JSON.parse(fs.readFileSync(f, 'utf8'));
        fs.writeFileSync(f, JSON.stringify({ ...pre, size: { shortest_edge: 24 }, crop_size: { height: 24, width: 24 } }));
      })),
      /takes 16x16 pixel_values but .*preprocessor_config\.json crops to 24: the files do not belong together/,
    );
    assert.match(await score(broken('damaged', (d) => fs.writeFileSync(path.join(d, 'text_model.onnx'), 'not a model'))), /text_model\.onnx .*not an ONNX model|protobuf/);
    // Sanity: the builder's text graph alone still parses (the damaged file above is what failed).
    const clip = loadClip(run);
    try {
      assert.ok(encodeModel(buildClipTextModel({ model: clip.model, tokenizer: clip.tokenizer, tokenizerFile: clip.tokenizerFile, checkpoint: '', step: 0 })).length > 1000);
    } finally {
      clip.model.dispose();
    }
  });
});
