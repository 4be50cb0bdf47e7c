/** The loader: seeded epochs, seeded captions, batches as (B, 3, R, R) floats, prefetch, and exact resume. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DataError } from '../../src/core/data/errors';
import { Batch, DataLoader, LoaderOptions } from '../../src/core/data/loader';
import { captionDraws, dataRandom, epochOrder } from '../../src/core/data/order';
import { openFolderSource } from '../../src/core/data/sources/folder';
import { DataSource } from '../../src/core/data/sources/types';
import { CoreEmitter, LogEvent } from '../../src/core/events';
import { Tensor } from '../../src/core/tensor/tensor';
import { badImages, noisePng, temporaryDir } from './helpers';

const GOOD = 21;
const OPTIONS: LoaderOptions = { batchSize: 4, resolution: 8, seed: 7, prefetchBatches: 2 };

/** 21 distinct images (3 captions each for every third one) plus a corrupt and a truncated file. */
async function makeFolder(): Promise<string> {
  const dir = temporaryDir();
  for (let i = 0; i < GOOD; i++) {
    const name = `img${String(i).padStart(2, '0')}`;
    fs.writeFileSync(path.join(dir, `${name}.png`), await noisePng(12, 10, i + 1));
    const captions = i % 3 === 0 ? [`${name} a`, `${name} b`, `${name} c`] : [`${name}`];
    fs.writeFileSync(path.join(dir, `${name}.txt`), captions.join('\n'));
  }
  const bad = await badImages();
  fs.writeFileSync(path.join(dir, 'bad-corrupt.png'), bad.corrupt);
  fs.writeFileSync(path.join(dir, 'bad-truncated.png'), bad.truncated);
  return dir;
}

async function take(loader: DataLoader, count: number): Promise<Batch[]> {
  const batches: Batch[] = [];
  for (let i = 0; i < count; i++) batches.push(await loader.next());
  return batches;
}

/** What must match between two runs: ids, captions, pixels and the state after each batch. */
function summary(batches: readonly Batch[]) {
  return batches.map((batch) => ({
    ids: batch.ids,
    captions: batch.captions,
    images: Buffer.from(batch.images.buffer).toString('base64'),
    state: batch.state,
  }));
}

describe('data: loader', () => {
  let source: DataSource;
  before(async () => {
    source = await openFolderSource(await makeFolder());
    assert.equal(source.records.length, GOOD + 2);
  });

  it('hands out (B, 3, R, R) batches in [0, 1] with one caption per image, ready for Tensor.from', async () => {
    const loader = new DataLoader(source, OPTIONS);
    const batch = await loader.next();
    loader.close();
    assert.deepEqual(batch.shape, [4, 3, 8, 8]);
    assert.equal(batch.images.length, 4 * 3 * 8 * 8);
    assert.ok(batch.images.every((value) => value >= 0 && value <= 1));
    assert.equal(batch.captions.length, 4);
    batch.ids.forEach((id, i) => assert.ok(batch.captions[i].startsWith(id.replace('.png', '')), id));
    const tensor = Tensor.from(batch.images, batch.shape);
    assert.deepEqual([...tensor.shape], [4, 3, 8, 8]);
    tensor.dispose();
  });

  it('depends only on the seed: the same seed gives the same batches, another seed another order', async () => {
    const first = new DataLoader(source, OPTIONS);
    const again = new DataLoader(source, OPTIONS);
    const other = new DataLoader(source, { ...OPTIONS, seed: 8 });
    const [a, b, c] = await Promise.all([take(first, 8), take(again, 8), take(other, 8)]);
    [first, again, other].forEach((loader) => loader.close());
    assert.deepEqual(summary(a), summary(b));
    assert.notDeepEqual(
      a.map((batch) => batch.ids),
      c.map((batch) => batch.ids),
    );
  });

  it('visits every good record once per epoch, skips bad ones once, and counts them by reason', async () => {
    const events = new CoreEmitter();
    const warnings: string[] = [];
    events.onType('log', (event: LogEvent) => {
      if (event.level === 'warn') warnings.push(event.message);
    });
    const loader = new DataLoader(source, { ...OPTIONS, events });
    const ids = (await take(loader, 12)).flatMap((batch) => batch.ids); // 48 images: two epochs and some
    loader.close();
    assert.equal(new Set(ids.slice(0, GOOD)).size, GOOD);
    assert.equal(new Set(ids.slice(GOOD, 2 * GOOD)).size, GOOD);
    assert.notDeepEqual(ids.slice(0, GOOD), ids.slice(GOOD, 2 * GOOD)); // a new shuffle each epoch
    assert.ok(!ids.some((id) => id.startsWith('bad-')));
    assert.deepEqual(loader.report().skipped.byReason, { corrupt: 1, truncated: 1 });
    assert.equal(warnings.length, 2);
    assert.match(warnings.join('\n'), /skipped bad-corrupt\.png \(corrupt: /);
  });

  it('draws each caption per epoch from the seeded stream', async () => {
    const loader = new DataLoader(source, { ...OPTIONS, shuffle: false, batchSize: GOOD });
    const epochs = await take(loader, 6);
    loader.close();
    const seen = new Set(epochs.map((batch) => batch.captions[0])); // img00 has captions a, b, c
    assert.ok(seen.size >= 2, `img00 showed ${[...seen].join(', ')} over 6 epochs`);
    const draws = captionDraws(dataRandom(OPTIONS.seed), 3, source.records.length);
    const index = source.records.findIndex((record) => record.id === 'img00.png');
    assert.equal(epochs[3].captions[0], `img00 ${'abc'[Math.floor(draws[index] * 3)]}`);
    assert.deepEqual(
      epochs[0].ids,
      source.records.map((record) => record.id).filter((id) => !id.startsWith('bad-')),
    );
  });

  it('resumes exactly: a loader made from state() hands out the batches the first one would have', async () => {
    for (const stopAfter of [1, 5, 6]) {
      // 21 good records of 4-image batches: batch 6 spans the first epoch's end
      const original = new DataLoader(source, OPTIONS);
      const before = await take(original, stopAfter);
      const saved = JSON.parse(JSON.stringify(original.state())) as ReturnType<DataLoader['state']>;
      assert.deepEqual(saved, before[before.length - 1].state);
      const rest = await take(original, 6);
      original.close();
      const resumed = DataLoader.fromState(source, OPTIONS, saved);
      const replay = await take(resumed, 6);
      resumed.close();
      assert.deepEqual(summary(replay), summary(rest), `resumed after ${stopAfter} batches`);
    }
  });

  it('keeps the next batches decoding while the caller is busy (the training step does not wait)', async () => {
    // Good records only: a file that fails is read again to classify it, a second step that needs a turn.
    const good = { ...source, records: source.records.filter((record) => !record.id.startsWith('bad-')) };
    const loader = new DataLoader(good, OPTIONS);
    await loader.next();
    const until = Date.now() + 300; // a synchronous "training step": the JavaScript thread never yields
    while (Date.now() < until) {
      // busy
    }
    // Two check phases have a poll phase between them: there the finished decodes are received, none started.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    const ready = loader.readyCount();
    loader.close();
    assert.equal(ready, OPTIONS.batchSize * (OPTIONS.prefetchBatches ?? 2), 'every prefetched record decoded');
  });

  it('refuses a state from other data or another seed, and a data set with nothing usable', async () => {
    const state = new DataLoader(source, OPTIONS).state();
    assert.throws(() => DataLoader.fromState(source, { ...OPTIONS, seed: 1 }, state), /seed 7, not 1/);
    assert.throws(
      () => DataLoader.fromState(source, OPTIONS, { ...state, records: 5 }),
      (error: unknown) => error instanceof DataError && /5 records/.test(error.message),
    );
    const dir = temporaryDir();
    const bad = await badImages();
    fs.writeFileSync(path.join(dir, 'a.png'), bad.corrupt);
    fs.writeFileSync(path.join(dir, 'b.png'), bad.empty);
    const hopeless = new DataLoader(await openFolderSource(dir), OPTIONS);
    await assert.rejects(hopeless.next(), /none of the 2 records could be decoded/);
    hopeless.close();
    const empty = await openFolderSource(temporaryDir());
    assert.throws(() => new DataLoader(empty, OPTIONS), /no usable records/);
  });

  it('epochOrder is a seeded permutation that changes with the epoch', () => {
    const data = dataRandom(3);
    const e0 = epochOrder(data, 0, 50, true);
    assert.deepEqual([...e0].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
    assert.deepEqual(e0, epochOrder(dataRandom(3), 0, 50, true));
    assert.notDeepEqual(e0, epochOrder(data, 1, 50, true));
    assert.deepEqual([...epochOrder(data, 4, 5, false)], [0, 1, 2, 3, 4]);
  });
});
