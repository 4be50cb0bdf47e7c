/**
 * What the training loops (dVAE, prior, CLIP) do with their run directory besides training: everything is checked
 * before the first write, so a refused start or resume leaves the run byte for byte as it was (and a refused fresh
 * start leaves no folder); the run is locked while it trains; what interrupted writes left behind is removed when a
 * run starts, never when it is refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DataError } from '../../src/core/data/errors';
import { CoreEvent } from '../../src/core/events';
import { RunLockError } from '../../src/core/io/run-lock';
import { trainClip } from '../../src/core/train/clip-trainer';
import { TextTokenizer } from '../../src/core/text';
import { CheckpointError, listCheckpoints } from '../../src/core/checkpoint';
import { DvaeTrainer } from '../../src/core/train/dvae-trainer';
import { PriorTrainer } from '../../src/core/train/prior-trainer';
import { hashTree, makeImages, readMetrics, temporaryDir, tinyConfig } from '../commands/helpers';
import { makeCaptionedData, makeTinyDvae, readJsonLines, tinyPriorConfig } from './prior-helpers';

describe('train: run directories are checked before the first write, locked, and cleaned at start', function () {
  this.timeout(120000);
  let images: string;

  before(async () => {
    images = await makeImages(path.join(temporaryDir(), 'images'), 10);
  });

  it('dVAE: a refused resume (the config against the weights, the data, train.steps) leaves the run byte-identical', async () => {
    const run = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(images, ['train.steps=4']), out: run }).run();
    const before = hashTree(run);
    const refusals: Array<[string[], (error: unknown) => boolean]> = [
      [['model.vocab_size=32'], (e) => e instanceof CheckpointError && /another model configuration/.test(e.hint ?? '')],
      [[`data.path=${path.join(run, 'no-such-images')}`], (e) => e instanceof DataError && /no data set at/.test(e.message)],
      [['train.steps=2'], (e) => e instanceof CheckpointError && /past train\.steps = 2/.test(e.message)],
    ];
    for (const [sets, refused] of refusals) {
      await assert.rejects(new DvaeTrainer({ config: tinyConfig(images, sets), out: run, resume: true }).run(), refused, sets.join(' '));
      assert.deepEqual(hashTree(run), before, `${sets.join(' ')} changed the run`);
    }
    const resumed = await new DvaeTrainer({ config: tinyConfig(images), out: run, resume: true }).run();
    assert.deepEqual([resumed.resumedFrom, resumed.step], [4, 8]);
    assert.deepEqual(readMetrics(run).map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('dVAE: a refused fresh start leaves no folder behind', async () => {
    const out = path.join(temporaryDir(), 'runs', 'new');
    await assert.rejects(new DvaeTrainer({ config: tinyConfig(path.join(out, 'missing')), out }).run(), DataError);
    assert.ok(!fs.existsSync(path.dirname(out)), 'nothing written');
  });

  it('dVAE: a second trainer on a run being trained is refused, naming the holder; the first finishes', async () => {
    const run = temporaryDir();
    const first = new DvaeTrainer({ config: tinyConfig(images, ['train.steps=2']), out: run }).run();
    await assert.rejects(
      new DvaeTrainer({ config: tinyConfig(images, ['train.steps=2']), out: run }).run(),
      (e) => e instanceof RunLockError && e.message.includes(`in use by dalle train-dvae (PID ${process.pid} on host`),
    );
    assert.equal((await first).step, 2);
    assert.ok(!fs.existsSync(path.join(run, '.dalle.lock')), 'released at the end');
  });

  it('dVAE: leftovers of interrupted writes are removed when a run starts, with a warning, and kept when it is refused', async () => {
    const run = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(images, ['train.steps=4']), out: run }).run();
    // What a SIGKILL during writes leaves: a checkpoint being filled, one set aside, temporary files.
    const leftovers = [
      path.join(run, 'checkpoints', 'step-8.tmp-AbC123'),
      path.join(run, 'checkpoints', 'step-4.old-0123456789ab'),
      path.join(run, '.config.yaml.tmp-424242-0123456789ab'),
      path.join(run, 'samples', '.step-8.png.tmp-424242-0123456789ab'),
    ];
    fs.mkdirSync(leftovers[0]);
    fs.writeFileSync(path.join(leftovers[0], 'model.safetensors'), 'half a checkpoint');
    fs.mkdirSync(leftovers[1]);
    fs.writeFileSync(leftovers[2], 'half a config');
    fs.writeFileSync(leftovers[3], 'half a png');
    fs.writeFileSync(path.join(run, 'notes.tmp-keep'), 'a file of the user');

    const before = hashTree(run);
    await assert.rejects(new DvaeTrainer({ config: tinyConfig(path.join(run, 'missing')), out: run, resume: true }).run(), DataError);
    assert.deepEqual(hashTree(run), before, 'a refused resume removes nothing');

    const events: CoreEvent[] = [];
    await new DvaeTrainer({ config: tinyConfig(images, ['train.steps=6']), out: run, resume: true, events: { emit: (e) => events.push(e) } }).run();
    for (const leftover of leftovers) assert.ok(!fs.existsSync(leftover), `${leftover} is still there`);
    assert.ok(fs.existsSync(path.join(run, 'notes.tmp-keep')));
    assert.deepEqual(listCheckpoints(run), [4, 6]);
    const warning = events.find((e) => e.type === 'log' && e.level === 'warn' && /left by interrupted writes/.test(e.message));
    assert.ok(warning && warning.type === 'log', 'a warning event');
    assert.match(warning.message, /^removed 4 temporary entries left by interrupted writes: /);
    for (const leftover of leftovers) assert.ok(warning.message.includes(leftover), leftover);
  });

  describe('prior and CLIP', () => {
    let work: string;
    let data: string;
    let dvae: string;

    before(async () => {
      work = temporaryDir('dalle-run-folder-');
      data = await makeCaptionedData(path.join(work, 'data'));
      dvae = await makeTinyDvae(work, data);
    });

    it('prior: a refused resume (other data: its token cache; a text_vocab below the tokenizer) leaves the run byte-identical and encodes nothing', async () => {
      const run = path.join(work, 'prior');
      await new PriorTrainer({ config: tinyPriorConfig(data, dvae, ['train.steps=3']), out: run }).run();
      const before = hashTree(run);
      const caches = fs.readdirSync(path.join(dvae, 'token-cache'));
      // The same images and captions elsewhere: another data set for the cache key.
      const other = await makeCaptionedData(path.join(work, 'other-data'));
      await assert.rejects(
        new PriorTrainer({ config: tinyPriorConfig(other, dvae), out: run, resume: true }).run(),
        (e) => e instanceof CheckpointError && /was trained on token cache \w+, but the data set and dVAE now give \w+/.test(e.message),
      );
      assert.deepEqual(hashTree(run), before);
      assert.deepEqual(fs.readdirSync(path.join(dvae, 'token-cache')), caches, 'nothing encoded for a refused resume');

      const vocab = TextTokenizer.load(path.join(run, 'tokenizer.json')).vocabSize;
      await assert.rejects(
        new PriorTrainer({ config: tinyPriorConfig(data, dvae, [`model.text_vocab=${vocab - 1}`]), out: run, resume: true }).run(),
        new RegExp(`but the tokenizer .* has ${vocab} tokens`),
      );
      assert.deepEqual(hashTree(run), before);

      const resumed = await new PriorTrainer({ config: tinyPriorConfig(data, dvae), out: run, resume: true }).run();
      assert.deepEqual([resumed.resumedFrom, resumed.step], [3, 6]);
      assert.deepEqual(readJsonLines(path.join(run, 'metrics.jsonl')).filter((l) => 'loss' in l).map((l) => l.step), [1, 2, 3, 4, 5, 6]);
    });

    it('CLIP: a run that has checkpoints is refused unchanged; a validation set too small for a pool leaves no folder', async () => {
      const base = { data: path.join(data, 'train'), steps: 2, batchSize: 4, lr: 1e-3, weightDecay: 0.1, warmupSteps: 0, seed: 1, vocab: 270, arch: { resolution: 16 }, checkpointEvery: 0 };
      const run = path.join(work, 'clip');
      await trainClip({ ...base, out: run });
      const before = hashTree(run);
      await assert.rejects(trainClip({ ...base, out: run }), (e) => e instanceof CheckpointError && /already holds a trained CLIP/.test(e.message));
      assert.deepEqual(hashTree(run), before);

      const fresh = path.join(work, 'clip-small-val');
      await assert.rejects(trainClip({ ...base, out: fresh, val: path.join(data, 'val'), valPool: 100 }), /fewer than one retrieval pool of 100/);
      assert.ok(!fs.existsSync(fresh), 'nothing written');
    });
  });
});
