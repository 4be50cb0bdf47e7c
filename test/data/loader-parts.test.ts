/**
 * The loader cut into parts (data-parallel ranks): the parts of each batch, put together, are the batch one loader
 * hands out, bad records included (the parts agree on them), and a part resumes from the global state.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Batch, DataLoader, LoaderOptions } from '../../src/core/data/loader';
import { openFolderSource } from '../../src/core/data/sources/folder';
import { DataSource } from '../../src/core/data/sources/types';
import { badImages, noisePng, temporaryDir } from './helpers';

const OPTIONS: LoaderOptions = { batchSize: 8, resolution: 8, seed: 11, prefetchBatches: 2 };

/** An in-process stand-in for the ranks' agreement: resolves every part's call with the union once all have called. */
function agreement(parts: number): (failed: readonly number[]) => Promise<readonly number[]> {
  let waiting: Array<{ failed: readonly number[]; resolve: (all: readonly number[]) => void }> = [];
  return (failed) =>
    new Promise((resolve) => {
      waiting.push({ failed, resolve });
      if (waiting.length === parts) {
        const all = [...new Set(waiting.flatMap((w) => w.failed))].sort((a, b) => a - b);
        const done = waiting;
        waiting = [];
        for (const w of done) w.resolve(all);
      }
    });
}

async function takeParts(source: DataSource, parts: number, batches: number, state?: Batch['state']): Promise<Batch[][]> {
  const agree = agreement(parts);
  const loaders = Array.from({ length: parts }, (_, index) =>
    new DataLoader(source, { ...OPTIONS, part: { index, count: parts, agreeOnFailures: agree } }, state));
  const out: Batch[][] = [];
  for (let b = 0; b < batches; b++) out.push(await Promise.all(loaders.map((l) => l.next())));
  loaders.forEach((l) => l.close());
  return out;
}

/** The parts of one batch put together, in part order. */
function joined(parts: readonly Batch[]) {
  return {
    ids: parts.flatMap((p) => p.ids),
    captions: parts.flatMap((p) => p.captions),
    images: Buffer.concat(parts.map((p) => Buffer.from(p.images.buffer))).toString('base64'),
    states: parts.map((p) => p.state),
    epochs: parts.map((p) => p.epoch),
  };
}

describe('data: loader in parts (data-parallel ranks)', () => {
  let source: DataSource;
  before(async () => {
    const dir = temporaryDir();
    for (let i = 0; i < 19; i++) {
      fs.writeFileSync(path.join(dir, `img${String(i).padStart(2, '0')}.png`), await noisePng(10, 9, 100 + i));
      fs.writeFileSync(path.join(dir, `img${String(i).padStart(2, '0')}.txt`), `picture ${i}\nimage ${i}`);
    }
    const bad = await badImages();
    // Bad records spread through the order, so that they fall in different parts of different batches.
    for (const name of ['bad-a', 'bad-b', 'bad-c']) fs.writeFileSync(path.join(dir, `${name}.png`), bad.corrupt);
    fs.writeFileSync(path.join(dir, 'bad-d.png'), bad.truncated);
    source = await openFolderSource(dir);
  });

  for (const parts of [2, 4]) {
    it(`${parts} parts of each batch are the batch of one loader, bad records passed over alike`, async () => {
      const whole = new DataLoader(source, OPTIONS);
      const expected: Batch[] = [];
      for (let b = 0; b < 8; b++) expected.push(await whole.next()); // 64 images: three epochs and some
      whole.close();
      const split = await takeParts(source, parts, 8);
      split.forEach((batch, b) => {
        const j = joined(batch);
        assert.deepEqual(j.ids, expected[b].ids, `batch ${b}`);
        assert.deepEqual(j.captions, expected[b].captions);
        assert.equal(j.images, Buffer.from(expected[b].images.buffer).toString('base64'));
        for (const state of j.states) assert.deepEqual(state, expected[b].state);
        for (const epoch of j.epochs) assert.equal(epoch, expected[b].epoch);
        batch.forEach((p) => assert.deepEqual(p.shape, [OPTIONS.batchSize / parts, 3, 8, 8]));
      });
      assert.ok(expected.flatMap((b) => b.ids).every((id) => !id.startsWith('bad-')));
    });
  }

  it('resumes in another number of parts from the global state', async () => {
    const first = await takeParts(source, 2, 3);
    const state = first[2][0].state;
    const whole = DataLoader.fromState(source, OPTIONS, state);
    const expected = [await whole.next(), await whole.next()];
    whole.close();
    const resumed = await takeParts(source, 4, 2, state);
    resumed.forEach((batch, b) => assert.deepEqual(joined(batch).ids, expected[b].ids));
  });

  it('refuses a batch that does not cut into equal parts, a part outside the count, and parts without agreement', () => {
    assert.throws(() => new DataLoader(source, { ...OPTIONS, part: { index: 0, count: 3, agreeOnFailures: agreement(3) } }), /8 cannot be cut into 3/);
    assert.throws(() => new DataLoader(source, { ...OPTIONS, part: { index: 2, count: 2, agreeOnFailures: agreement(2) } }), /part 2 of 2/);
    assert.throws(() => new DataLoader(source, { ...OPTIONS, part: { index: 0, count: 2 } }), /needs agreeOnFailures/);
  });
});
