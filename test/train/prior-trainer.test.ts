/**
 * The prior's training loop on a tiny captioned data set and a tiny trained dVAE: the token cache (built once, reused,
 * rebuilt when the data change), metrics and validation lines, the learning-rate schedule, the tokenizer, and an exact
 * resume (an interrupted + resumed run writes the losses of an uninterrupted one).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadDvae } from '../../src/core/models/dvae/load';
import { loadOrBuildTokenCache, tokenCacheSplits } from '../../src/core/data/token-cache';
import { readNpySync } from '../../src/core/io/npy';
import { CoreEvent } from '../../src/core/events';
import { listCheckpoints } from '../../src/core/checkpoint';
import { PriorTrainer } from '../../src/core/train/prior-trainer';
import { warmupCosine } from '../../src/core/train/schedule';
import { temporaryDir } from '../commands/helpers';
import { makeCaptionedData, makeTinyDvae, readJsonLines, tinyPriorConfig } from './prior-helpers';

describe('prior trainer', function () {
  this.timeout(120000);
  let work: string;
  let data: string;
  let dvae: string;

  before(async () => {
    work = temporaryDir('dalle-prior-');
    data = await makeCaptionedData(path.join(work, 'data'));
    dvae = await makeTinyDvae(work, data);
  });

  it('encodes each split once into a cache keyed by the checkpoint and the data, and re-encodes after a change', async () => {
    assert.deepEqual(tokenCacheSplits(data).map((s) => s.name), ['train', 'val']);
    assert.deepEqual(tokenCacheSplits(path.join(data, 'train')).map((s) => s.name), ['train']);
    const trained = loadDvae(dvae);
    try {
      const first = await loadOrBuildTokenCache({ data, dvae: trained });
      assert.equal(first.built, true);
      assert.deepEqual(first.train.shape, [12, 8, 8]);
      assert.deepEqual(first.val?.shape, [4, 8, 8]);
      const npy = readNpySync(path.join(first.dir, 'train.npy'));
      assert.equal(npy.dtype, 'i32');
      assert.deepEqual([...(npy.data as Int32Array)], [...first.train.tokens]);
      assert.ok(first.train.tokens.every((v) => v >= 0 && v < 16));
      // Captions in the order of the sorted files, every caption kept.
      const caption0 = fs.readFileSync(path.join(data, 'train', '000.txt'), 'utf8').trim().split('\n');
      assert.deepEqual(first.train.captions[0], caption0);
      const again = await loadOrBuildTokenCache({ data, dvae: trained });
      assert.equal(again.built, false);
      assert.equal(again.key, first.key);
      assert.deepEqual([...again.train.tokens], [...first.train.tokens]);
      // The same grids as encoding the images directly.
      const { encodeImages } = await import('../../src/core/image/dvae-codec');
      const direct = await encodeImages(trained, [path.join(data, 'val')]);
      assert.deepEqual([...direct.tokens], [...first.val!.tokens]);
      // An edited caption is new data: a new key.
      const copy = path.join(work, 'data-edited');
      fs.cpSync(data, copy, { recursive: true });
      fs.writeFileSync(path.join(copy, 'val', '001.txt'), 'a different caption\n');
      const edited = await loadOrBuildTokenCache({ data: copy, dvae: trained });
      assert.equal(edited.built, true);
      assert.notEqual(edited.key, first.key);
    } finally {
      trained.model.dispose();
    }
  });

  it('writes train and val lines, a tokenizer and checkpoints; lr follows warmup + cosine', async () => {
    const out = path.join(work, 'runs', 'straight');
    const result = await new PriorTrainer({ config: tinyPriorConfig(data, dvae), out }).run();
    assert.equal(result.step, 6);
    assert.equal(result.stopped, false);
    const lines = readJsonLines(path.join(out, 'metrics.jsonl'));
    const train = lines.filter((l) => 'loss' in l);
    const val = lines.filter((l) => 'val_loss' in l);
    assert.deepEqual(train.map((l) => l.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(val.map((l) => l.step), [3, 6]);
    const lr = warmupCosine(1e-3, 4.5e-4 / 32, 2, 6);
    train.forEach((l, s) => {
      assert.ok(Math.abs(l.lr - lr(s)) < 1e-12, `lr at update ${s + 1}: ${l.lr} vs ${lr(s)}`);
      assert.ok(Math.abs(l.loss - (l.text_loss / 8 + (7 * l.image_loss) / 8)) < 1e-5);
      // Untrained: near the uniform cross-entropy of 16 image codes.
      assert.ok(l.image_loss > 1 && l.image_loss < 2 * Math.log(16));
    });
    for (const v of val) {
      assert.equal(v.val_examples, 4);
      assert.ok(Math.abs(v.val_loss - (v.val_text_loss / 8 + (7 * v.val_image_loss) / 8)) < 1e-6);
    }
    assert.deepEqual(listCheckpoints(out), [3, 6]);
    const tok = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8'));
    assert.equal(tok.model.type, 'BPE');
    assert.match(fs.readFileSync(path.join(out, 'config.yaml'), 'utf8'), /dvae: .*dvae/);
  });

  it('resumes exactly: an interrupted and resumed run writes the losses of an uninterrupted one', async () => {
    const straight = path.join(work, 'runs', 'straight');
    const out = path.join(work, 'runs', 'interrupted');
    let trainer: PriorTrainer;
    const events = {
      emit(e: CoreEvent) {
        if (e.type === 'metrics' && e.split === 'train' && e.step === 2) trainer.stop();
      },
    };
    trainer = new PriorTrainer({ config: tinyPriorConfig(data, dvae), out, events });
    const first = await trainer.run();
    assert.equal(first.stopped, true);
    assert.equal(first.step, 2);
    assert.deepEqual(listCheckpoints(out), [2]);
    const second = await new PriorTrainer({ config: tinyPriorConfig(data, dvae), out, resume: true }).run();
    assert.equal(second.resumedFrom, 2);
    assert.equal(second.step, 6);
    const a = readJsonLines(path.join(straight, 'metrics.jsonl'));
    const b = readJsonLines(path.join(out, 'metrics.jsonl'));
    const strip = (ls: Record<string, number>[]) => ls.map(({ step, loss, text_loss, image_loss, loss_mean, grad_norm, lr, epoch, val_loss, val_text_loss, val_image_loss }) =>
      ({ step, loss, text_loss, image_loss, loss_mean, grad_norm, lr, epoch, val_loss, val_text_loss, val_image_loss }));
    assert.deepEqual(strip(b), strip(a));
    // A run directory with checkpoints is not overwritten by a fresh run.
    await assert.rejects(new PriorTrainer({ config: tinyPriorConfig(data, dvae), out }).run(), /already has checkpoints/);
  });

  it('refuses a dVAE whose grid does not fit the prior, saying what to set', async () => {
    await assert.rejects(
      new PriorTrainer({ config: tinyPriorConfig(data, dvae, ['model.image_grid=4']), out: path.join(work, 'runs', 'bad') }).run(),
      (error: Error & { hint?: string }) =>
        /makes 8x8 grids of 16 codes/.test(error.message) && /model\.image_grid=8/.test(error.hint ?? ''),
    );
  });
});
