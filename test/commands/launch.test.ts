/**
 * `dalle launch` as a user runs it (node bin/run.js launch ...), with the children replaced by a stand-in script
 * (DALLE_LAUNCH_TEST_CHILD, test/harness/launch-child.ts): the variables each rank gets, the output of each rank,
 * the exit code of a failing rank and the stop of the others, signal forwarding, and the arguments it refuses.
 * Also: ranks other than 0 of a trainer draw only warnings (cli/data-parallel.ts).
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { Writable } from 'node:stream';
import { isSecondaryRank } from '../../src/cli/data-parallel';
import { createRenderer } from '../../src/cli/render';
import { resolveLaunch } from '../../src/core/distributed/launch-env';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const CHILD = path.join(ROOT, 'dist', 'test', 'harness', 'launch-child.js');

/** Variables of the test runner's environment that would make the launcher itself a rank. */
const LAUNCH_VARS = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'DALLE_LAUNCH', 'SLURM_NTASKS', 'JOB_COMPLETION_INDEX', 'DALLE_WORLD_SIZE'];

function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DALLE_LAUNCH_TEST_CHILD: CHILD, ...extra };
  for (const name of LAUNCH_VARS) if (!(name in extra)) delete env[name];
  return env;
}

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** A running `dalle launch ARGS`, its output so far, and a way to wait for some of it. */
class Launcher {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly finished: Promise<Finished>;
  private readonly waiters: (() => void)[] = [];

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    const started = Date.now();
    this.child = spawn(process.execPath, [BIN, 'launch', ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    const wake = (): void => {
      for (const waiter of this.waiters) waiter();
    };
    this.child.stdout?.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString();
      wake();
    });
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
      wake();
    });
    this.finished = new Promise((resolve) => {
      this.child.on('close', (code) => resolve({ code, stdout: this.stdout, stderr: this.stderr, ms: Date.now() - started }));
    });
  }

  /** Resolves when `test` holds of the output (checked whenever output arrives); fails after `timeoutMs`. */
  async waitFor(test: (out: { stdout: string; stderr: string }) => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    if (test(this)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}\nstdout: ${this.stdout}\nstderr: ${this.stderr}`)), timeoutMs);
      this.waiters.push(() => {
        if (!test(this)) return;
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

/** The --json summary: the last line of stdout. */
function summaryOf(finished: Finished): Record<string, unknown> & { ranks: { rank: number; exitCode: number | null; signal: string | null }[] } {
  const last = lines(finished.stdout).at(-1) ?? '';
  return JSON.parse(last);
}

describe('commands: dalle launch', function () {
  this.timeout(60_000);

  it('gives each rank its variables; rank 0 passes through, the others are prefixed line by line on stderr', async () => {
    const args = ['--nproc', '3', '--json', '--', 'train-dvae', 'env', '--set', 'a=1', '--set', 'b=2', '--json'];
    const finished = await new Launcher(args, { DALLE_TEST_MARK: 'kept' }).finished;
    assert.equal(finished.code, 0, finished.stderr);
    const out = lines(finished.stdout);
    assert.equal(out.length, 2, `rank 0's line, then the summary: ${finished.stdout}`);
    const reports = [JSON.parse(out[0])];
    for (const rank of [1, 2]) {
      const line = lines(finished.stderr).find((text) => text.startsWith(`[rank ${rank}] {`));
      assert.ok(line !== undefined, finished.stderr);
      reports.push(JSON.parse(line.slice(`[rank ${rank}] `.length)));
    }
    const port = reports[0].env.MASTER_PORT;
    assert.match(port, /^\d+$/);
    assert.ok(Number(port) >= 1 && Number(port) <= 65_535);
    reports.forEach((report, rank) => {
      assert.deepEqual(report.env, {
        RANK: String(rank),
        WORLD_SIZE: '3',
        LOCAL_RANK: String(rank),
        LOCAL_WORLD_SIZE: '3',
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: port,
        DALLE_LAUNCH: '1',
        DALLE_LAUNCH_TEST_CHILD: null,
        DALLE_TEST_MARK: 'kept',
      });
      // the arguments after -- arrive as given, repeated flags and all
      assert.deepEqual(report.args, ['train-dvae', 'env', '--set', 'a=1', '--set', 'b=2', '--json']);
      const launch = resolveLaunch(report.env);
      assert.deepEqual([launch.source, launch.rank, launch.worldSize, launch.localRank], ['dalle-launch', rank, 3, rank]);
    });
    assert.equal(new Set(reports.map((report) => report.pid)).size, 3);
    const err = lines(finished.stderr);
    for (const rank of [1, 2]) {
      const own = err.filter((line) => line.startsWith(`[rank ${rank}] `)).map((line) => line.slice(`[rank ${rank}] `.length));
      assert.deepEqual(own.slice(1), [`stderr of rank ${rank}`, 'two lines', 'in one write', 'a line in two writes', 'no newline at the end']);
    }
    // rank 0's stderr is untouched: no prefix
    for (const text of ['stderr of rank 0', 'two lines', 'in one write']) assert.ok(err.includes(text), text);
    assert.ok(!/^\[rank 0\]/m.test(finished.stderr));
    assert.ok(err.some((line) => /^\[launch\] starting 3 ranks of dalle train-dvae env .*; rendezvous at 127\.0\.0\.1:\d+$/.test(line)), finished.stderr);
    const summary = summaryOf(finished);
    assert.equal(summary.exitCode, 0);
    assert.equal(summary.masterPort, Number(port));
    assert.deepEqual(summary.ranks.map((r) => [r.rank, r.exitCode, r.signal]), [[0, 0, null], [1, 0, null], [2, 0, null]]);
  });

  it('a failing rank: the others get the grace, then SIGTERM; the launcher exits with its code, naming it', async () => {
    const finished = await new Launcher(['--nproc', '3', '--master-port', '29999', '--grace', '0.5', '--kill-after', '20', '--json', '--', 'train-prior', 'fail', '1', '7']).finished;
    assert.equal(finished.code, 7, finished.stderr);
    assert.match(finished.stderr, /^\[launch\] rank 1 failed first, with exit code 7; waiting 0\.5 s for the other ranks to stop$/m);
    assert.match(finished.stderr, /^\[launch\] ranks 0, 2 still running 0\.5 s after the failure: SIGTERM$/m);
    assert.match(finished.stderr, /^\[launch\] rank 1 failed first \(exit code 7\); exit code 7$/m);
    assert.match(finished.stdout, /^rank 0 got SIGTERM$/m);
    assert.match(finished.stderr, /^\[rank 2\] rank 2 got SIGTERM$/m);
    const summary = summaryOf(finished);
    assert.equal(summary.masterPort, 29999);
    assert.deepEqual(summary.firstFailure && (summary.firstFailure as { rank: number }).rank, 1);
    assert.deepEqual(summary.terminated, [0, 2]);
    assert.deepEqual(summary.killed, []);
    assert.deepEqual(summary.ranks.map((r) => r.exitCode), [143, 7, 143]);
    assert.ok(finished.ms < 15_000, `${finished.ms} ms: the SIGTERM came after the grace, not after --kill-after`);
  });

  it('ranks that ignore SIGTERM are killed --kill-after seconds later', async () => {
    const finished = await new Launcher(['--nproc', '2', '--grace', '0.2', '--kill-after', '0.3', '--json', '--', 'train-dvae', 'fail-stubborn', '1', '3']).finished;
    assert.equal(finished.code, 3, finished.stderr);
    assert.match(finished.stdout, /^rank 0 ignores SIGTERM$/m);
    assert.match(finished.stderr, /^\[launch\] rank 0 still running 0\.3 s after SIGTERM: SIGKILL$/m);
    const summary = summaryOf(finished);
    assert.deepEqual([summary.terminated, summary.killed], [[0], [0]]);
    assert.deepEqual(summary.ranks.map((r) => [r.exitCode, r.signal]), [[null, 'SIGKILL'], [3, null]]);
  });

  it('ranks that stop by themselves within the grace are not signalled; the first failure gives the exit code', async () => {
    const finished = await new Launcher(['--nproc', '2', '--grace', '30', '--json', '--', 'train-dvae', 'fail-alone', '1', '9']).finished;
    assert.equal(finished.code, 9, finished.stderr);
    const summary = summaryOf(finished);
    assert.deepEqual([summary.terminated, summary.killed], [[], []]);
    assert.deepEqual(summary.ranks.map((r) => r.exitCode), [5, 9]);
    assert.ok(finished.ms < 20_000, `${finished.ms} ms`);
  });

  it('a rank killed by a signal: 128 + its number, and the signal is named', async () => {
    const finished = await new Launcher(['--nproc', '2', '--grace', '0.2', '--', 'train-dvae', 'fail', '1', '-1']).finished;
    assert.equal(finished.code, 137, finished.stderr);
    assert.match(finished.stderr, /^\[launch\] rank 1 failed first, with signal SIGKILL/m);
  });

  it('SIGTERM to the launcher reaches every rank; they exit 143, and so does the launcher', async () => {
    const launcher = new Launcher(['--nproc', '2', '--json', '--', 'train-prior', 'fail', '99', '0']);
    await launcher.waitFor((out) => /^ready 0$/m.test(out.stdout) && /^\[rank 1\] ready 1$/m.test(out.stderr), 'both ranks ready');
    launcher.child.kill('SIGTERM');
    const finished = await launcher.finished;
    assert.equal(finished.code, 143, finished.stderr);
    assert.deepEqual(summaryOf(finished).ranks.map((r) => [r.exitCode, r.signal]), [[143, null], [143, null]], finished.stdout);
    assert.match(finished.stderr, /^\[launch\] SIGTERM: forwarded to ranks 0, 1 \(they finish the update and checkpoint; a second signal makes them exit at once\)$/m);
    assert.match(finished.stdout, /^rank 0 got SIGTERM$/m);
    assert.match(finished.stderr, /^\[rank 1\] rank 1 got SIGTERM$/m);
    assert.match(finished.stderr, /^\[launch\] stopped by SIGTERM: rank [01] exited first, with exit code 143; exit code 143$/m);
    assert.doesNotMatch(finished.stderr, /failed first/);
  });

  it('a second Ctrl-C is forwarded too: the ranks see two SIGINTs (not three), and the launcher exits 130', async () => {
    const launcher = new Launcher(['--nproc', '2', '--', 'train-prior', 'signals']);
    await launcher.waitFor((out) => /^ready 0$/m.test(out.stdout) && /^\[rank 1\] ready 1$/m.test(out.stderr), 'both ranks ready');
    launcher.child.kill('SIGINT');
    await launcher.waitFor((out) => /^rank 0 first SIGINT$/m.test(out.stdout) && /^\[rank 1\] rank 1 first SIGINT$/m.test(out.stderr), 'the first SIGINT in both ranks');
    assert.equal(launcher.child.exitCode, null, 'the launcher waits for its ranks');
    launcher.child.kill('SIGINT');
    const finished = await launcher.finished;
    assert.equal(finished.code, 130, finished.stderr);
    assert.match(finished.stdout, /^rank 0 second SIGINT$/m);
    assert.match(finished.stderr, /^\[rank 1\] rank 1 second SIGINT$/m);
    assert.match(finished.stderr, /^\[launch\] SIGINT again: forwarded to ranks 0, 1$/m);
  });

  it("a signal during the grace cancels the launcher's SIGTERM (it would be the ranks' second signal)", async () => {
    // A grace of 3 s: the signal must land inside it even on a loaded machine.
    const launcher = new Launcher(['--nproc', '3', '--grace', '3', '--kill-after', '1', '--', 'train-prior', 'signals-fail', '1', '7']);
    await launcher.waitFor((out) => /^\[launch\] rank 1 failed first, with exit code 7; waiting 3 s/m.test(out.stderr), 'the failure');
    // The ranks' handlers are installed once they say ready (a loaded machine can start one after rank 1 failed).
    await launcher.waitFor((out) => /^ready 0$/m.test(out.stdout) && /^\[rank 2\] ready 2$/m.test(out.stderr), 'ranks 0 and 2 ready');
    launcher.child.kill('SIGINT');
    await launcher.waitFor((out) => /^rank 0 first SIGINT$/m.test(out.stdout) && /^\[rank 2\] rank 2 first SIGINT$/m.test(out.stderr), 'the first SIGINT in ranks 0 and 2');
    await new Promise((resolve) => setTimeout(resolve, 4500)); // past the grace and --kill-after
    assert.equal(launcher.child.exitCode, null, launcher.stderr);
    assert.doesNotMatch(launcher.stdout + launcher.stderr, /rank \d second|still running/);
    launcher.child.kill('SIGINT');
    const finished = await launcher.finished;
    assert.equal(finished.code, 7, 'the first failure still gives the exit code');
    assert.match(finished.stdout, /^rank 0 second SIGINT$/m);
  });

  it('refuses bad arguments (exit 2) and a launcher that is itself one rank of several (exit 3)', () => {
    const run = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [BIN, 'launch', ...args], { cwd: ROOT, env: cleanEnv(env), encoding: 'utf8' });
    const cases: [string[], RegExp][] = [
      [['--nproc', '0', '--', 'train-prior'], /Expected an integer greater than or equal to 1/],
      [['--nproc', '257', '--', 'train-prior'], /Expected an integer less than or equal to 256/],
      [['--nproc', '2', '--', 'launch', '--nproc', '2', '--', 'train-prior'], /`launch` cannot start `launch`/],
      [['--nproc', '2', '--', 'generate', 'a cat'], /dalle launch starts trainers only, not `generate`/],
      [['--nproc', '2', 'train-prior'], /put -- before the command: dalle launch \.\.\. -- train-prior \.\.\./],
      [['--nproc', '2', 'train-prior', '--out', 'x'], /Nonexistent flag: --out/],
      [['--nproc', '2', 'stray', '--', 'train-prior'], /unexpected argument before --: stray/],
      [['--nproc', '2', '--'], /no command after --/],
    ];
    for (const [args, message] of cases) {
      const result = run(args);
      assert.equal(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr.replace(/\s+/g, ' '), message, args.join(' '));
    }
    const slurm = { SLURM_NTASKS: '2', SLURM_PROCID: '0', SLURM_LOCALID: '0', SLURM_JOB_ID: '42', SLURM_JOB_NODELIST: 'n[1-2]' };
    const nested = run(['--nproc', '2', '--', 'train-prior', 'env'], slurm);
    assert.equal(nested.status, 3, nested.stderr);
    assert.match(nested.stderr.replace(/\s+/g, ' '), /LaunchEnvError: `dalle launch` starts every process on this machine, but this process is already rank 0 of 2 \(slurm: SLURM_PROCID=0, SLURM_NTASKS=2\)/);
  });
});

describe('cli: ranks other than 0 of a trainer draw only warnings', () => {
  const RANK_1 = { RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };

  it('only the trainers on a rank other than 0', () => {
    assert.equal(isSecondaryRank('train-prior', RANK_1), true);
    assert.equal(isSecondaryRank('train-dvae', { ...RANK_1, RANK: '0', LOCAL_RANK: '0' }), false);
    assert.equal(isSecondaryRank('train-clip', {}), false);
    assert.equal(isSecondaryRank('generate', RANK_1), false, 'other commands never read the launch variables');
    assert.equal(isSecondaryRank('generate', { RANK: '1' }), false, '... so a partial set does not concern them');
    assert.throws(() => isSecondaryRank('train-prior', { RANK: '1' }), { name: 'LaunchEnvError' });
  });

  it('such a renderer passes warnings and drops progress, stages, metrics, artifacts and info', () => {
    const written: string[] = [];
    const stderr = new Writable({
      write(chunk, _encoding, done) {
        written.push(String(chunk));
        done();
      },
    }) as unknown as NodeJS.WriteStream;
    for (const warningsOnly of [true, false]) {
      written.length = 0;
      const renderer = createRenderer({ json: false, writeJsonLine: () => undefined, stderr, warningsOnly });
      renderer.handle({ type: 'stage', name: 'training' });
      renderer.handle({ type: 'progress', task: 'train', step: 1, total: 2 });
      renderer.handle({ type: 'log', level: 'info', message: 'an info line' });
      renderer.handle({ type: 'log', level: 'warn', message: 'a warning line' });
      renderer.handle({ type: 'metrics', step: 1, split: 'val', values: { loss: 1 } });
      renderer.handle({ type: 'artifact', kind: 'checkpoint', path: '/tmp/x' });
      renderer.handle({ type: 'done', task: 'train' });
      renderer.close();
      const text = written.join('');
      assert.match(text, /a warning line/);
      if (warningsOnly) assert.equal(lines(text).length, 1, text);
      else assert.ok(lines(text).length >= 4 && /an info line/.test(text), text);
    }
  });
});
