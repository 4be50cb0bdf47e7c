/**
 * A missing run, or a run without a checkpoint yet, is a CheckpointError whose hint names the command that trains the
 * kind of run that was asked for (it used to name `dalle train-dvae` for a missing prior or CLIP run too).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { CheckpointError, resolveCheckpoint } from '../../src/core/checkpoint';
import { temporaryDir } from '../commands/helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function hintOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof CheckpointError, String(error));
    return error.hint ?? '';
  }
  assert.fail('no CheckpointError');
}

describe('train: checkpoint hints name the right training command', () => {
  let work: string;
  let emptyRun: string;

  before(() => {
    work = temporaryDir('dalle-hints-');
    emptyRun = path.join(work, 'empty-run');
    fs.mkdirSync(emptyRun);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('resolveCheckpoint names the command of the kind expected, or every one when none is', () => {
    const missing = path.join(work, 'absent');
    assert.equal(hintOf(() => resolveCheckpoint(missing, 'prior')), 'give a run directory (runs/NAME) made by `dalle train-prior`, or one of its checkpoints/step-N directories');
    assert.match(hintOf(() => resolveCheckpoint(missing, 'clip')), /made by `dalle train-clip`/);
    assert.match(hintOf(() => resolveCheckpoint(missing, 'dvae')), /made by `dalle train-dvae`/);
    assert.match(hintOf(() => resolveCheckpoint(missing)), /made by `dalle train-dvae`, `dalle train-prior`, `dalle train-clip`/);
    assert.equal(hintOf(() => resolveCheckpoint(emptyRun, 'prior')), 'train first (`dalle train-prior ... --out RUN`); a run gets its first checkpoint at train.checkpoint_every updates or at the end');
    assert.equal(hintOf(() => resolveCheckpoint(emptyRun, 'clip')), 'train first (`dalle train-clip ... --out RUN`); a run gets its first checkpoint at --checkpoint-every updates or at the end');
  });

  it('generate with a missing --prior, rerank and evaluate clip-score with an empty --clip run, as a user runs them', async () => {
    const generate = await runCommand(['generate', 'a red apple', '--prior', path.join(work, 'absent'), '--dvae', path.join(work, 'absent'), '--out', path.join(work, 'out')], { root: ROOT });
    assert.equal(generate.error?.name, 'CheckpointError');
    assert.match(generate.stderr + ((generate.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /`dalle train-prior`/);
    const images = path.join(work, 'images');
    fs.mkdirSync(images);
    for (const args of [['rerank', '--clip', emptyRun, images], ['evaluate', 'clip-score', '--clip', emptyRun, '--data', images]]) {
      const { error } = await runCommand(args, { root: ROOT });
      assert.equal(error?.name, 'CheckpointError', args.join(' '));
      assert.match(((error as { suggestions?: string[] }).suggestions ?? []).join(' '), /train first \(`dalle train-clip \.\.\. --out RUN`\)/, args.join(' '));
    }
  });
});
