/**
 * train-clip resumes exactly and checkpoints on a signal, as the other trainers do (it runs in the same loop,
 * src/core/train/loop.ts): an interrupted run (stop() inside a metrics interval, after a validation) resumed to the end
 * writes the lines, the best checkpoint and the weights of an uninterrupted run, bitwise; in a real process SIGINT
 * and SIGTERM checkpoint at the update they stopped at (exit 130, 143) and `--resume` continues with the settings
 * recorded in RUN/clip.json; a refused resume leaves the run byte-identical.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { CheckpointError, listCheckpoints } from '../../src/core/checkpoint';
import { CoreEvent } from '../../src/core/events';
import { ClipTrainOptions, ClipTrainer, trainClip } from '../../src/core/train/clip-trainer';
import { makeCaptionedData } from '../train/prior-helpers';
import { hashTree, temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

function metricsLines(run: string): Array<Record<string, unknown>> {
  const file = path.join(run, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
}

/** The lines without their wall-clock field. */
function timeless(run: string): Array<Record<string, unknown>> {
  return metricsLines(run).map(({ seconds: _s, ...rest }) => rest);
}

interface Running {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

/** `dalle ARGS` as its own process, one thread. */
function start(args: string[]): Running {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DALLE_THREADS: '1' } });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout!.resume();
  const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
    clearTimeout(killer);
    resolve(code);
  }));
  return { child, stderr: () => stderr, exited };
}

async function until(condition: () => boolean, what: string, running: Running): Promise<void> {
  const deadline = Date.now() + 100_000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; stderr: ${running.stderr()}`);
    if (running.child.exitCode !== null) assert.fail(`the process ended (${running.child.exitCode}) before ${what}: ${running.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('commands: train-clip resumes exactly and checkpoints on SIGINT / SIGTERM', function () {
  this.timeout(300_000);
  let data: string;
  let work: string;

  before(async () => {
    work = temporaryDir('dalle-clip-resume-');
    data = await makeCaptionedData(path.join(work, 'data'));
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('stop() then --resume equals an uninterrupted run: metrics lines, RUN/best and the final weights, bitwise', async () => {
    const settings: Omit<ClipTrainOptions, 'out'> = {
      data: path.join(data, 'train'), val: path.join(data, 'val'), valPool: 4, evalEvery: 3,
      steps: 8, batchSize: 4, lr: 3e-3, warmupSteps: 2, seed: 3, vocab: 270, arch: { resolution: 16 }, checkpointEvery: 0, logEvery: 2,
    };
    const straight = path.join(work, 'straight');
    const reference = await trainClip({ ...settings, out: straight });
    assert.equal(reference.step, 8);

    const out = path.join(work, 'interrupted');
    // Stopped after the validation of update 3 (a best checkpoint there), inside the metrics interval 3-4.
    const trainer: ClipTrainer = new ClipTrainer({
      ...settings,
      out,
      events: { emit: (e: CoreEvent) => (e.type === 'metrics' && e.split === 'val' && e.step === 3 ? trainer.stop() : undefined) },
    });
    const first = await trainer.run();
    assert.deepEqual([first.step, first.stopped], [3, true]);
    assert.deepEqual(listCheckpoints(out), [3]);
    assert.equal(fs.readFileSync(path.join(out, 'best'), 'utf8'), 'checkpoints/step-3\n');

    // A refused resume (another architecture) leaves the run as it was.
    const before = hashTree(out);
    await assert.rejects(trainClip({ out, resume: true, arch: { resolution: 32 } }), (e) => e instanceof CheckpointError && /has resolution 16, not 32/.test(e.message));
    assert.deepEqual(hashTree(out), before);

    // The settings come from RUN/clip.json: only `out` and `resume` are given.
    const second = await trainClip({ out, resume: true });
    assert.deepEqual([second.resumedFrom, second.step, second.stopped], [3, 8, false]);
    assert.deepEqual(timeless(out), timeless(straight));
    assert.equal(fs.readFileSync(path.join(out, 'best'), 'utf8'), fs.readFileSync(path.join(straight, 'best'), 'utf8'));
    assert.deepEqual(second.best?.step, reference.best?.step);
    assert.deepEqual(listCheckpoints(out), listCheckpoints(straight));
    const weights = (run: string) => fs.readFileSync(path.join(run, 'checkpoints', 'step-8', 'model.safetensors'));
    assert.ok(weights(out).equals(weights(straight)), 'the final weights');
  });

  it('SIGINT and SIGTERM checkpoint where they stopped (130, 143) and say how to resume; --resume --steps continues exactly', async () => {
    const out = path.join(work, 'signalled');
    const args = ['train-clip', '--data', path.join(data, 'train'), '--out', out, '--batch-size', '4', '--vocab', '270', '--resolution', '16', '--checkpoint-every', '100000'];
    const stoppedAt = async (running: Running, signal: NodeJS.Signals, code: number, after: number): Promise<number> => {
      await until(() => metricsLines(out).length > after, 'a metrics line', running);
      running.child.kill(signal);
      assert.equal(await running.exited, code, running.stderr());
      const stderr = running.stderr().replace(/\s+/g, ' ');
      assert.match(stderr, new RegExp(`${signal}: finishing this update and writing a checkpoint`));
      const m = /stopped at update (\d+) of 100000; checkpoint \S*step-(\d+) resume with: dalle train-clip --out \S*signalled --resume/.exec(stderr);
      assert.ok(m, stderr);
      assert.equal(m[1], m[2]);
      const step = Number(m[1]);
      assert.equal(fs.readFileSync(path.join(out, 'latest'), 'utf8').trim(), `checkpoints/step-${step}`);
      assert.ok(!fs.existsSync(path.join(out, '.dalle.lock')), 'the lock is released');
      return step;
    };
    const first = await stoppedAt(start([...args, '--steps', '100000']), 'SIGINT', 130, 0);
    assert.ok(first >= 10, `stopped at ${first}, after the first line (update 10)`);
    const second = await stoppedAt(start(['train-clip', '--out', out, '--resume']), 'SIGTERM', 143, metricsLines(out).length);
    assert.ok(second > first);
    assert.deepEqual(listCheckpoints(out), [first, second]);

    // The two runs together equal one run of the same settings stopped at the same update (100000 updates: the
    // learning rate schedule depends on --steps, so the comparison keeps it).
    const losses = (run: string) => metricsLines(run).map((l) => [l.step, l.loss]);
    const lastLine = Number(metricsLines(out).at(-1)?.step);
    assert.ok(lastLine > first, `a line of the resumed process (${lastLine})`);
    const straight = path.join(work, 'signalled-straight');
    const trainer: ClipTrainer = new ClipTrainer({
      data: path.join(data, 'train'), out: straight, steps: 100000, batchSize: 4, vocab: 270, arch: { resolution: 16 }, checkpointEvery: 100000, seed: 0,
      events: { emit: (e: CoreEvent) => (e.type === 'metrics' && e.step === lastLine ? trainer.stop() : undefined) },
    });
    await trainer.run();
    assert.deepEqual(losses(out), losses(straight));

    // --steps given with --resume overrides the recorded 100000: the run ends there.
    const resumed = await dalle(['train-clip', '--out', out, '--resume', '--steps', String(second + 2)]);
    assert.equal(resumed.error, undefined, resumed.error?.message);
    assert.match(resumed.stdout, new RegExp(`trained ${second + 2} updates`));
    assert.deepEqual(losses(out).slice(0, -1), losses(straight), 'the lines up to the checkpoint are kept');
    assert.equal(metricsLines(out).at(-1)?.step, second + 2);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'clip.json'), 'utf8')).train.steps, second + 2);
  });

  it('--resume refuses the flags a resumed run cannot change, and a run without a checkpoint', async () => {
    const none = await dalle(['train-clip', '--out', path.join(work, 'nothing-here'), '--resume']);
    assert.equal(none.error?.oclif?.exit, 4);
    assert.match(none.error?.message ?? '', /nothing-here has no 'latest' file/);
    assert.ok(!fs.existsSync(path.join(work, 'nothing-here')), 'no folder left behind');
    const kept = await dalle(['train-clip', '--out', path.join(work, 'interrupted'), '--resume', '--vocab', '300']);
    assert.equal(kept.error?.oclif?.exit, 2);
    assert.match(kept.error?.message ?? '', /--vocab: a resumed CLIP keeps its own tokenizer and architecture/);
    const noData = await dalle(['train-clip', '--out', path.join(work, 'no-data')]);
    assert.equal(noData.error?.oclif?.exit, 2);
    assert.match(noData.error?.message ?? '', /--data is required/);
  });
});
