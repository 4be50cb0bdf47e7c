/**
 * Nothing lost, nothing silently wrong, as a user meets it with real processes (bin/run.js): a refused --resume leaves
 * the run byte-identical and usable; two commands writing one folder at once are refused (the second names the
 * first), except shards of one generate job; SIGTERM checkpoints at the update it stopped at and exits 143, and a
 * second signal exits at once saying how to go on; a stale lock is taken over with a warning.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { readResults } from '../../src/core/sample/output';
import { listCheckpoints } from '../../src/core/checkpoint';
import { DvaeTrainer } from '../../src/core/train/dvae-trainer';
import { fabricateLock } from '../io/helpers';
import { hashTree, makeImages, readMetrics, temporaryDir, tinyConfig, writeTinyConfig } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const LOCK = '.dalle.lock';

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

interface Running {
  readonly child: ChildProcess;
  readonly output: { stdout: string; stderr: string };
  /** Resolves with the exit code (null when killed by a signal it did not handle). */
  readonly exited: Promise<number | null>;
}

/** `dalle ARGS` as its own process, one thread, output collected. */
function start(args: string[]): Running {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DALLE_THREADS: '1' } });
  const output = { stdout: '', stderr: '' };
  child.stdout!.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 150_000);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
    clearTimeout(killer);
    resolve(code);
  }));
  return { child, output, exited };
}

async function until(condition: () => boolean, what: string, running?: Running): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}${running ? `; stderr: ${running.output.stderr}` : ''}`);
    if (running && running.child.exitCode !== null) assert.fail(`the process ended (${running.child.exitCode}) before ${what}: ${running.output.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const oneLine = (text: string): string => text.replace(/\s+/g, ' ');
const metricsLines = (run: string): number => (fs.existsSync(path.join(run, 'metrics.jsonl')) ? readMetrics(run).length : 0);

describe('commands: runs and output folders are never lost or written twice', function () {
  this.timeout(300_000);
  let work: string;
  let images: string;
  let config: string;
  let run: string;

  before(async () => {
    work = temporaryDir('dalle-safety-');
    images = await makeImages(path.join(work, 'images'), 10);
    config = writeTinyConfig(work);
    run = path.join(work, 'runs', 'tiny');
    const { error } = await dalle(['train-dvae', '--config', config, '--data', images, '--out', run]);
    assert.equal(error, undefined, error?.message);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('a refused --resume (a model change, a mistyped --data, past train.steps) leaves the run byte-identical and usable', async () => {
    const copy = path.join(work, 'runs', 'copy');
    fs.cpSync(run, copy, { recursive: true });
    const before = hashTree(copy);
    for (const args of [['--set', 'model.vocab_size=32'], ['--data', path.join(work, 'imagez')], ['--set', 'train.steps=4']]) {
      const { error } = await dalle(['train-dvae', '--out', copy, '--resume', ...args]);
      assert.ok(error !== undefined && [3, 4].includes(error.oclif?.exit ?? 0), `${args.join(' ')}: ${error?.message}`);
      assert.deepEqual(hashTree(copy), before, `${args.join(' ')} changed the run`);
    }
    const tokens = path.join(work, 'copy-tokens.npy');
    const encoded = await dalle(['encode', '--dvae', copy, images, '--out', tokens]);
    assert.equal(encoded.error, undefined, encoded.error?.message);
    const decoded = await dalle(['decode', '--dvae', copy, tokens, '--out', path.join(work, 'copy-decoded')]);
    assert.equal(decoded.error, undefined, decoded.error?.message);
    const resumed = await dalle(['train-dvae', '--out', copy, '--resume', '--set', 'train.steps=9']);
    assert.equal(resumed.error, undefined, resumed.error?.message);
    assert.deepEqual(readMetrics(copy).map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('two train-dvae --resume on one run: the second is refused naming the first; SIGTERM checkpoints where it stopped (143) and --resume continues exactly', async () => {
    const out = path.join(work, 'runs', 'contended');
    fs.cpSync(run, out, { recursive: true });
    const first = start(['train-dvae', '--out', out, '--resume', '--set', 'train.steps=100000', '--set', 'train.checkpoint_every=100000']);
    await until(() => metricsLines(out) > 12, 'the first process to train', first);

    const second = start(['train-dvae', '--out', out, '--resume']);
    assert.equal(await second.exited, 4, second.output.stderr);
    const holder = JSON.parse(fs.readFileSync(path.join(out, LOCK), 'utf8'));
    assert.match(
      oneLine(second.output.stderr),
      new RegExp(`RunLockError: .*contended is in use by dalle train-dvae \\(PID ${first.child.pid} on host ${os.hostname()}, started ${holder.started}\\).*wait for it to finish; if it is surely gone .* delete .*\\.dalle\\.lock`),
    );

    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 143, first.output.stderr);
    const stderr = oneLine(first.output.stderr);
    assert.match(stderr, /SIGTERM: finishing this update and writing a checkpoint/);
    const stoppedAt = Number(/stopped at update (\d+) of 100000; checkpoint \S*step-(\d+) resume with: dalle train-dvae --out \S*contended --resume/.exec(stderr)?.[1]);
    assert.ok(stoppedAt > 12, stderr);
    assert.equal(fs.readFileSync(path.join(out, 'latest'), 'utf8').trim(), `checkpoints/step-${stoppedAt}`);
    assert.ok(!fs.existsSync(path.join(out, LOCK)), 'the lock is released');
    assert.deepEqual(readMetrics(out).map((m) => m.step), Array.from({ length: stoppedAt }, (_, i) => i + 1), 'one writer: every update once, in order');

    const resumed = await dalle(['train-dvae', '--out', out, '--resume', '--set', `train.steps=${stoppedAt + 2}`]);
    assert.equal(resumed.error, undefined, resumed.error?.message);
    const straight = temporaryDir();
    await new DvaeTrainer({ config: tinyConfig(images, [`train.steps=${stoppedAt + 2}`]), out: straight }).run();
    assert.deepEqual(readMetrics(out).map((m) => m.loss), readMetrics(straight).map((m) => m.loss));
  });

  it('a second signal exits at once: before any checkpoint it says there is nothing to resume; after one, how to resume', async () => {
    // SIGINT and SIGTERM sent while the process is stopped (SIGSTOP) arrive together when it continues, in an order
    // of the kernel's: the first asks for a checkpoint, the second comes before one is written and sets the exit code.
    const signalTwice = async (running: Running): Promise<string> => {
      running.child.kill('SIGSTOP');
      running.child.kill('SIGINT');
      running.child.kill('SIGTERM');
      running.child.kill('SIGCONT');
      const code = await running.exited;
      const stderr = oneLine(running.output.stderr);
      const [first, second] = code === 130 ? ['SIGTERM', 'SIGINT'] : ['SIGINT', 'SIGTERM'];
      assert.ok(code === 130 || code === 143, `exit ${code}: ${stderr}`);
      assert.match(stderr, new RegExp(`Warning: ${first}: finishing this update and writing a checkpoint \\(a second signal exits at once\\)`));
      return `${second} again: exiting`;
    };
    const fresh = path.join(work, 'runs', 'fresh-interrupted');
    const args = ['train-dvae', '--config', config, '--data', images, '--out', fresh, '--set', 'train.checkpoint_every=100000'];
    const first = start([...args, '--set', 'train.steps=100000']);
    await until(() => metricsLines(fresh) > 3, 'training', first);
    const secondSignal = await signalTwice(first);
    assert.ok(oneLine(first.output.stderr).includes(`${secondSignal} before any checkpoint was written, so there is nothing to resume; start over by running the same command again`), first.output.stderr);
    assert.doesNotMatch(first.output.stderr, /resume with/);
    assert.deepEqual(listCheckpoints(fresh), []);
    assert.ok(!fs.existsSync(path.join(fresh, LOCK)), 'the lock is released');
    // Starting over works, and the metrics of the run that never checkpointed are not kept.
    const again = await dalle([...args, '--set', 'train.steps=3']);
    assert.equal(again.error, undefined, again.error?.message);
    assert.deepEqual(readMetrics(fresh).map((m) => m.step), [1, 2, 3]);

    const second = start(['train-dvae', '--out', fresh, '--resume', '--set', 'train.steps=100000']);
    await until(() => metricsLines(fresh) > 6, 'training', second);
    const againResumed = await signalTwice(second);
    assert.match(oneLine(second.output.stderr), new RegExp(`${againResumed} without a new checkpoint; resume from the last one with: dalle train-dvae --out \\S*fresh-interrupted --resume`));
    assert.equal(fs.readFileSync(path.join(fresh, 'latest'), 'utf8').trim(), 'checkpoints/step-3');
  });

  it('a stale lock (its process gone) is taken over with a warning', async () => {
    const out = path.join(work, 'runs', 'stale');
    fs.cpSync(run, out, { recursive: true });
    const gone = start(['--version']);
    await gone.exited;
    fabricateLock(out, { pid: gone.child.pid });
    const resumed = start(['train-dvae', '--out', out, '--resume', '--set', 'train.steps=9']);
    assert.equal(await resumed.exited, 0, resumed.output.stderr);
    assert.match(oneLine(resumed.output.stderr), new RegExp(`Warning: took over the lock of \\S*stale: its holder, dalle train-dvae \\(PID ${gone.child.pid} on host ${os.hostname()}, started 2025-01-02T03:04:05.000Z\\), is gone \\(no process has PID ${gone.child.pid}\\)`));
    assert.ok(!fs.existsSync(path.join(out, LOCK)));
  });

  it('decode, export and rerank refuse a folder that a live process holds, before any work', async () => {
    const holder = start(['train-dvae', '--out', path.join(work, 'runs', 'holder'), '--config', config, '--data', images, '--set', 'train.steps=100000']);
    try {
      await until(() => metricsLines(path.join(work, 'runs', 'holder')) > 0, 'the holder to start', holder);
      const locked = path.join(work, 'locked');
      fs.mkdirSync(locked);
      fabricateLock(locked, { pid: holder.child.pid, command: 'dalle generate' });
      const before = hashTree(locked);
      const tokens = path.join(work, 'tokens.npy');
      assert.equal((await dalle(['encode', '--dvae', run, images, '--out', tokens])).error, undefined);
      for (const args of [
        ['decode', '--dvae', run, tokens, '--out', locked],
        ['export', '--dvae', run, '--out', locked, '--no-check'],
        ['rerank', '--clip', path.join(work, 'no-clip'), locked],
      ]) {
        const { error } = await dalle(args);
        assert.equal(error?.name, 'RunLockError', `${args[0]}: ${error?.message}`);
        assert.equal(error?.oclif?.exit, 4);
        assert.match(error?.message ?? '', new RegExp(`in use by dalle generate \\(PID ${holder.child.pid} on host ${os.hostname()}`));
        assert.deepEqual(hashTree(locked), before, args[0]);
      }
    } finally {
      holder.child.kill('SIGKILL');
      await holder.exited;
    }
  });

  describe('generate (the bundled model)', () => {
    const caption = 'red apple, noto style';
    const generate = (out: string, extra: string[]): Running => start(['generate', caption, '--out', out, '--samples', '64', '--seed', '7', ...extra]);
    const pngs = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.png')) : []);
    /** Raw results.jsonl lines per (caption, sample): every one 1 when no unit was written twice. */
    const recordCounts = (dir: string): number[] => {
      const counts = new Map<string, number>();
      for (const line of fs.readFileSync(path.join(dir, 'results.jsonl'), 'utf8').split('\n').filter((l) => l !== '')) {
        const r = JSON.parse(line) as { caption_index: number; sample: number };
        counts.set(`${r.caption_index}/${r.sample}`, (counts.get(`${r.caption_index}/${r.sample}`) ?? 0) + 1);
      }
      return [...counts.values()];
    };

    it('a second unsharded run into the same folder is refused; SIGTERM ends the first at once (143) and releases the folder', async () => {
      const out = path.join(work, 'gen-whole');
      const first = generate(out, []);
      await until(() => pngs(out).length > 0, 'the first image', first);
      const second = generate(out, []);
      assert.equal(await second.exited, 4, second.output.stderr);
      assert.match(oneLine(second.output.stderr), new RegExp(`RunLockError: \\S*gen-whole is in use by dalle generate \\(PID ${first.child.pid} on host ${os.hostname()}`));
      first.child.kill('SIGTERM');
      assert.equal(await first.exited, 143, first.output.stderr);
      assert.ok(!fs.existsSync(path.join(out, LOCK)), 'the lock is released');
      const counts = recordCounts(out);
      assert.ok(counts.length > 0 && counts.every((n) => n === 1), `records per image: ${counts.join(',')}`);
    });

    it('shards of one job write one folder together; a second process of the same shard is refused', async () => {
      const out = path.join(work, 'gen-sharded');
      const shard0 = generate(out, ['--shard', '0/2']);
      await until(() => fs.existsSync(path.join(out, '.dalle.shard-0-of-2.lock')), 'shard 0 to take its lock', shard0);
      const again = generate(out, ['--shard', '0/2']);
      assert.equal(await again.exited, 4, again.output.stderr);
      assert.match(oneLine(again.output.stderr), new RegExp(`in use by dalle generate \\(PID ${shard0.child.pid} on host`));
      const shard1 = generate(out, ['--shard', '1/2']);
      // Shard 1 writes the odd samples: one of them while shard 0 still runs shows that the shards share the folder.
      await until(() => pngs(out).some((f) => /-s\d*[13579]\.png$/.test(f)), 'shard 1 to write an image', shard1);
      assert.equal(shard0.child.exitCode, null, 'shard 0 still runs');
      shard0.child.kill('SIGTERM');
      shard1.child.kill('SIGTERM');
      assert.deepEqual([await shard0.exited, await shard1.exited], [143, 143]);
      assert.deepEqual(fs.readdirSync(out).filter((f) => f.endsWith('.lock')), []);
      const counts = recordCounts(out);
      assert.ok(counts.every((n) => n === 1), `records per image: ${counts.join(',')}`);
      assert.equal(readResults(out).length, counts.length);
    });
  });
});
