/**
 * `dalle evaluate nll` as a user runs it, on a tiny trained prior and dVAE: the bits per text and per image token equal
 * a direct computation from the engine's forward (logits -> float64 log-softmax here, not the crossEntropy op); the
 * token cache train-prior made is used for the data set folder, and a plain folder (no cache) is encoded and gives the
 * same numbers; the bundled models are the default; bad input is a clear error.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { openDataSource } from '../../src/core/data';
import { DEFAULT_MAX_INPUT_PIXELS, decodeImage, rgbToChw } from '../../src/core/data/image';
import { loadDvae } from '../../src/core/models/dvae/load';
import { padText } from '../../src/core/models/prior';
import { loadPrior } from '../../src/core/models/prior/load';
import { Tensor, noGrad, tidy } from '../../src/core/tensor';
import { PriorTrainer } from '../../src/core/train/prior-trainer';
import { temporaryDir } from './helpers';
import { makeCaptionedData, makeTinyDvae, tinyPriorConfig } from '../train/prior-helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

function lastJson(stdout: string): Record<string, number | string | null> {
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

/** Mean NLL in nats per text token (positions 1..L-1) and per image token, from the prior's logits, in float64. */
async function directNll(priorRun: string, dvaeRun: string, folder: string): Promise<{ text: number; image: number; images: number }> {
  const prior = loadPrior(priorRun);
  const dvae = loadDvae(dvaeRun);
  try {
    const source = await openDataSource(folder, { requireCaptions: true });
    const L = prior.config.model.text_len;
    const Vt = prior.config.model.text_vocab;
    const R = dvae.resolution;
    let text = 0;
    let image = 0;
    for (const record of source.records) {
      const rgb = await decodeImage(record.file!, { resolution: R, maxInputPixels: DEFAULT_MAX_INPUT_PIXELS });
      const pixels = new Float32Array(3 * R * R);
      rgbToChw(rgb, R, pixels);
      const grid = Int32Array.from(noGrad(() => tidy(() => dvae.model.encode(Tensor.from(pixels, [1, 3, R, R])).toArray())));
      const ids = padText([prior.tokenizer.encode(record.captions[0]).slice(0, L)], L, Vt);
      const { tl, il, tv, iv } = noGrad(() => tidy(() => {
        const out = prior.model.forward(Tensor.from(ids, [1, L], 'i32'), Tensor.from(grid, [1, grid.length], 'i32'));
        return { tl: out.textLogits.toArray(), il: out.imageLogits.toArray(), tv: out.textLogits.shape[2], iv: out.imageLogits.shape[2] };
      }));
      // -log softmax(logits)[target], float64.
      const nll = (logits: Float32Array | Int32Array, row: number, V: number, target: number): number => {
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, logits[row * V + v]);
        let s = 0;
        for (let v = 0; v < V; v++) s += Math.exp(logits[row * V + v] - max);
        return Math.log(s) + max - logits[row * V + target];
      };
      let t = 0;
      for (let p = 0; p < L - 1; p++) t += nll(tl, p, tv, ids[p + 1]);
      let i = 0;
      for (let p = 0; p < grid.length; p++) i += nll(il, p, iv, grid[p]);
      text += t / (L - 1);
      image += i / grid.length;
    }
    const n = source.records.length;
    return { text: text / n, image: image / n, images: n };
  } finally {
    prior.model.dispose();
    dvae.model.dispose();
  }
}

describe('commands: evaluate nll', function () {
  this.timeout(180000);
  let work: string;
  let data: string;
  let dvae: string;
  let prior: string;

  before(async () => {
    work = temporaryDir('dalle-nll-');
    data = await makeCaptionedData(path.join(work, 'data'));
    dvae = await makeTinyDvae(work, data);
    prior = path.join(work, 'prior');
    await new PriorTrainer({ config: tinyPriorConfig(data, dvae), out: prior }).run(); // also writes the token cache
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('equals a direct computation from the forward, through the token cache and without it', async () => {
    const want = await directNll(prior, dvae, path.join(data, 'val'));
    const viaCache = await dalle(['evaluate', 'nll', '--prior', prior, '--dvae', dvae, '--data', data, '--json']);
    assert.equal(viaCache.error, undefined, viaCache.error?.message);
    const a = lastJson(viaCache.stdout);
    assert.ok(typeof a.token_cache === 'string' && a.token_cache.includes('token-cache'), `token_cache ${a.token_cache}`);
    assert.equal(a.images, want.images);
    assert.equal(a.text_tokens_per_example, 5);
    assert.equal(a.image_tokens_per_example, 64);
    const close = (got: number, expected: number, what: string): void =>
      assert.ok(Math.abs(got - expected) <= 1e-5 * Math.max(1, Math.abs(expected)), `${what}: ${got} vs ${expected}`);
    close(a.nats_per_text_token as number, want.text, 'nats per text token');
    close(a.nats_per_image_token as number, want.image, 'nats per image token');
    close(a.bits_per_text_token as number, want.text / Math.LN2, 'bits per text token');
    close(a.bits_per_image_token as number, want.image / Math.LN2, 'bits per image token');
    close(a.image_bits_per_dim as number, (64 * want.image) / Math.LN2 / (3 * 16 * 16), 'bits per dimension');

    // The val folder itself has no token cache: it is encoded in memory (nothing written) and gives the same numbers.
    const cachesBefore = fs.readdirSync(path.join(dvae, 'token-cache'));
    const plain = await dalle(['evaluate', 'nll', '--prior', prior, '--dvae', dvae, '--data', path.join(data, 'val'), '--json']);
    assert.equal(plain.error, undefined, plain.error?.message);
    const b = lastJson(plain.stdout);
    assert.equal(b.token_cache, null);
    close(b.nats_per_text_token as number, want.text, 'nats per text token (no cache)');
    close(b.nats_per_image_token as number, want.image, 'nats per image token (no cache)');
    assert.deepEqual(fs.readdirSync(path.join(dvae, 'token-cache')), cachesBefore);

    // --split train and --limit: the first 5 training images.
    const train = await dalle(['evaluate', 'nll', '--prior', prior, '--dvae', dvae, '--data', data, '--split', 'train', '--limit', '5', '--batch-size', '2']);
    assert.equal(train.error, undefined, train.error?.message);
    assert.match(train.stdout, /^5 images of .*train, prior .*: \d+\.\d{4} bits \(\d+\.\d{4} nats\) per text token, \d+\.\d{4} bits .* per image token; .* bits per pixel value/m);
  });

  it('uses the bundled models without --prior / --dvae', async () => {
    const r = await dalle(['evaluate', 'nll', '--data', path.join(data, 'val'), '--limit', '2', '--json']);
    assert.equal(r.error, undefined, r.error?.message);
    const j = lastJson(r.stdout);
    assert.ok(String(j.prior).includes(path.join('models', 'default', 'prior')), String(j.prior));
    assert.equal(j.images, 2);
    assert.equal(j.image_tokens_per_example, 256);
    assert.ok((j.bits_per_image_token as number) > 0 && (j.bits_per_image_token as number) < 10, `bits per image token ${j.bits_per_image_token}`);
  });

  it('says what is wrong: a dVAE that does not fit the prior, a missing data set', async () => {
    const bundledDvae = path.join(ROOT, 'models', 'default', 'dvae');
    const mismatch = await dalle(['evaluate', 'nll', '--prior', prior, '--dvae', bundledDvae, '--data', data]);
    assert.equal(mismatch.error?.name, 'CheckpointError');
    assert.match(mismatch.error?.message ?? '', /16x16 grids of .* reads 8x8 grids of 16/);
    const missing = await dalle(['evaluate', 'nll', '--prior', prior, '--dvae', dvae, '--data', path.join(work, 'nope')]);
    assert.equal(missing.error?.name, 'DataError');
    assert.match(missing.error?.message ?? '', /does not exist/);
  });
});
