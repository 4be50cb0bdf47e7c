/** The CLI as a user runs it: in-process with @oclif/test, and as a real child process of bin/run.js. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { captureOutput, runCommand } from '@oclif/test';
import { BaseCommand } from '../src/cli/base-command';
import { ConfigUse } from '../src/cli/config-use';
import { formatEventLine, formatProgressLine, RateMeter } from '../src/cli/render/format';
import { PlainRenderer } from '../src/cli/render';
import { dvaeConfig, resolveConfig } from '../src/core/config';
import { cudaStatus } from '../src/core/cuda';
import { CoreEmitter } from '../src/core/events';

const ROOT = path.resolve(__dirname, '..', '..');
const EMOJI_DVAE = path.join(ROOT, 'configs', 'dvae-emoji.yaml');

/** Runs `dalle ARGS` in-process, as oclif would from bin/run.js. */
function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** Runs `node bin/run.js ARGS` in a child process from the repository root. */
function dalleProcess(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

const temporaryDirs: string[] = [];
after(() => {
  for (const dir of temporaryDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A dVAE config with a misspelled key (`lrr`) on line 5, column 3. */
function typoConfig(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-cli-'));
  temporaryDirs.push(dir);
  const file = path.join(dir, 'typo.yaml');
  fs.writeFileSync(file, 'kind: dvae\nmodel:\n  n_hid: 64\ntrain:\n  lrr: 3e-4\n');
  return file;
}

describe('cli: dalle config', () => {
  afterEach(() => {
    // --json errors set the exit code of this process; the test runner decides its own.
    process.exitCode = undefined;
  });

  it('prints the resolved config as YAML, with where each override came from', async () => {
    const { stdout, result, error } = await dalle(['config', '--config', EMOJI_DVAE]);
    assert.equal(error, undefined);
    assert.match(stdout, /^kind: dvae$/m);
    assert.match(stdout, /^ {2}n_hid: 64 # .*\[from .*dvae-emoji\.yaml:\d+\]$/m);
    assert.match(stdout, /^ {2}beta2: 0\.999 # AdamW second-moment decay/m);
    assert.deepEqual(result, resolveConfig(dvaeConfig, { file: EMOJI_DVAE }));
  });

  it('--json prints the config as one JSON object', async () => {
    const { stdout } = await dalle(['config', '--config', EMOJI_DVAE, '--json']);
    assert.deepEqual(JSON.parse(stdout), resolveConfig(dvaeConfig, { file: EMOJI_DVAE }));
  });

  it('--set and the runtime flags override the file, and flags win over --set', async () => {
    const { result } = await dalle([
      'config',
      '--config',
      EMOJI_DVAE,
      '--set',
      'train.lr=3e-4',
      '--set',
      'runtime.seed=3',
      '--seed',
      '7',
      '--device',
      'cuda',
    ]);
    const config = result as ReturnType<typeof resolveConfig<typeof dvaeConfig>>;
    assert.equal(config.train.lr, 3e-4);
    assert.equal(config.runtime.seed, 7);
    assert.equal(config.runtime.device, 'cuda');
  });

  it('--kind prints the defaults without a file', async () => {
    const { result } = await dalle(['config', '--kind', 'prior']);
    assert.equal((result as { kind: string }).kind, 'prior');
  });

  it('a misspelled key fails with the file, line and key, and exit code 3', async () => {
    const file = typoConfig();
    const { error } = await dalle(['config', '--config', file]);
    assert.equal(error?.name, 'ConfigError');
    assert.equal(error?.oclif?.exit, 3);
    assert.equal(error?.message, `${file}:5:3: train.lrr: unknown key; did you mean "train.lr"?`);
  });

  it('a bad --set fails naming the argument', async () => {
    const { error } = await dalle(['config', '--kind', 'dvae', '--set', 'train.lr=fast']);
    assert.equal(error?.message, '--set train.lr=fast: train.lr: expected a number > 0, got "fast"');
  });

  it('--help lists the commands with their summaries', async () => {
    const { stdout } = await dalle(['--help']);
    assert.match(stdout, /COMMANDS/);
    assert.match(stdout, /config\s+Print the fully resolved config; run it before a long job\./);
  });

  it('config --help shows the shared flags and examples', async () => {
    const { stdout } = await dalle(['config', '--help']);
    for (const flag of ['--config', '--set', '--seed', '--device', '--threads', '--precision', '--json', '--kind']) {
      assert.ok(stdout.includes(flag), `help mentions ${flag}`);
    }
    assert.match(stdout, /EXAMPLES/);
  });
});

describe('cli: bin/run.js in a child process', () => {
  it('config --json prints the resolved config as JSON', () => {
    const child = dalleProcess(['config', '--config', 'configs/dvae-emoji.yaml', '--json']);
    assert.equal(child.status, 0, child.stderr);
    const config = JSON.parse(child.stdout) as { kind: string; model: { n_hid: number } };
    assert.equal(config.kind, 'dvae');
    assert.equal(config.model.n_hid, 64);
  });

  it('a misspelled config exits non-zero, naming the file, line, key and a suggestion', () => {
    const file = typoConfig();
    const child = dalleProcess(['config', '--config', file]);
    assert.equal(child.status, 3);
    const stderr = child.stderr.replace(/\s+/g, ' '); // oclif wraps long lines
    assert.ok(stderr.includes(`${file}:5:3: train.lrr: unknown key; did you mean "train.lr"?`), child.stderr);
    assert.match(stderr, /Try this: the keys of train are: steps, batch_size, lr/);
    assert.equal(child.stdout, '');
  });

  it('under --json an error is a JSON object on stdout, with the same exit code', () => {
    const child = dalleProcess(['config', '--config', typoConfig(), '--json']);
    assert.equal(child.status, 3);
    const { error } = JSON.parse(child.stdout) as { error: { name: string; line: number; keyPath: string } };
    assert.deepEqual([error.name, error.line, error.keyPath], ['ConfigError', 5, 'train.lrr']);
  });

  it('under --json a bad argument is a short JSON error, not the whole parse context', () => {
    const child = dalleProcess(['config', '--kind', 'dvae', 'train.lr=1', '--json']);
    assert.equal(child.status, 2);
    assert.ok(child.stdout.length < 2000, `${child.stdout.length} characters`);
    const { error } = JSON.parse(child.stdout) as { error: { message: string; oclif: { exit: number } } };
    assert.match(error.message, /Unexpected argument: train\.lr=1/);
    assert.equal(error.oclif.exit, 2);
  });

  it('DALLE_THREADS sets runtime.threads, and a bad value names the variable', () => {
    const ok = dalleProcess(['config', '--kind', 'dvae', '--json'], { DALLE_THREADS: '3' });
    assert.equal((JSON.parse(ok.stdout) as { runtime: { threads: number } }).runtime.threads, 3);
    const bad = dalleProcess(['config', '--kind', 'dvae'], { DALLE_THREADS: '-1' });
    assert.equal(bad.status, 3);
    assert.match(
      bad.stderr.replace(/\s+/g, ' '),
      /DALLE_THREADS=-1: runtime\.threads: expected an integer >= 0, got -1/,
    );
  });
});

// A command that reports through core events, as train-dvae and friends will.
class EventfulCommand extends BaseCommand<typeof EventfulCommand> {
  static override id = 'eventful';
  static override configUse: ConfigUse = { keys: ['model'] };

  async run(): Promise<{ finalLoss: number }> {
    const config = this.loadConfig(dvaeConfig);
    const events = this.renderEvents(new CoreEmitter());
    events.emit({ type: 'stage', name: 'training', detail: `n_hid ${config.model.n_hid}` });
    for (let step = 1; step <= 3; step++) {
      events.emit({ type: 'progress', task: 'train', step, total: 3, unit: 'update', metrics: { loss: 1 / step } });
    }
    events.emit({ type: 'done', task: 'train' });
    events.emit({ type: 'artifact', kind: 'checkpoint', path: 'runs/x/checkpoints/step-3' });
    return { finalLoss: 1 / 3 };
  }
}

describe('cli: the base command draws core events', () => {
  it('under --json: one JSON line per event, then the result', async () => {
    const { stdout } = await captureOutput(() =>
      EventfulCommand.run(['--json', '--config', EMOJI_DVAE], { root: ROOT }),
    );
    const lines = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(
      lines.map((line) => line.type),
      ['stage', 'progress', 'progress', 'progress', 'done', 'artifact', undefined],
    );
    assert.deepEqual(lines[0], { type: 'stage', name: 'training', detail: 'n_hid 64' });
    assert.deepEqual(lines[3], {
      type: 'progress',
      task: 'train',
      step: 3,
      total: 3,
      unit: 'update',
      metrics: { loss: 1 / 3 },
    });
    assert.deepEqual(lines[6], { finalLoss: 1 / 3 });
  });

  it('without --json: stdout stays clean; progress and messages go to stderr', async () => {
    const { stdout, stderr } = await captureOutput(() => EventfulCommand.run(['--config', EMOJI_DVAE], { root: ROOT }));
    assert.equal(stdout, '');
    assert.match(stderr, /== training: n_hid 64/);
    assert.match(stderr, /wrote checkpoint: runs\/x\/checkpoints\/step-3/);
  });

  it('the plain renderer (logs, no terminal) prints the first and the last progress line of a task', () => {
    const lines: string[] = [];
    const renderer = new PlainRenderer((line) => lines.push(line), 60_000);
    for (let step = 1; step <= 5; step++)
      renderer.handle({ type: 'progress', task: 'encode', step, total: 5, unit: 'image' });
    renderer.handle({ type: 'done', task: 'encode' });
    renderer.handle({ type: 'log', level: 'debug', message: 'hidden' });
    renderer.handle({ type: 'log', level: 'warn', message: 'shown' });
    assert.equal(lines.length, 3);
    assert.match(lines[0], /^encode 1\/5 image \(20%\)/);
    assert.match(lines[1], /^encode 5\/5 image \(100%\)/);
    assert.equal(lines[2], 'Warning: shown');
  });

  it('progress lines show rate, ETA and metrics', () => {
    const meter = new RateMeter();
    meter.add(0, 0);
    meter.add(10, 4000); // 2.5 updates a second
    const line = formatProgressLine(
      { type: 'progress', task: 'train', step: 10, total: 100, unit: 'update', metrics: { loss: 3.21456, lr: 1e-4 } },
      meter,
    );
    assert.equal(line, 'train 10/100 update (10%) | 2.50 update/s | ETA 36s | loss 3.215 lr 1.00e-4');
    assert.equal(
      formatEventLine({ type: 'metrics', split: 'eval', step: 10, values: { nll: 2.5 } }),
      'eval @ 10: nll 2.5',
    );
  });
});

describe('dalle info', () => {
  it('reports the kernels, the threads it was given and every registered op', async () => {
    const { stdout, error } = await dalle(['info', '--threads', '1', '--json']);
    assert.equal(error, undefined);
    const report = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.equal(report.threads, 1);
    assert.ok(['portable', 'avx2', 'avx512'].includes(report.cpu.isa));
    assert.ok(report.ops.includes('matmul') && report.ops.includes('conv2d'));
  });

  it('refuses a device it does not have, with exit code and advice', () => {
    const result = dalleProcess(['info', '--device', 'cuda']);
    assert.equal(result.status, 5);
    // The reason varies (no addon, no driver, no GPU): it must be this machine's, as the CUDA addon states it. The
    // renderer wraps long lines: compare words.
    const reason = cudaStatus().reason;
    assert.ok(reason.length > 0);
    const stderr = result.stderr.replace(/\s+/g, ' ');
    assert.ok(stderr.includes(`${reason.replace(/\s+/g, ' ')}; use --device cpu`), stderr);
  });

  // Kernel presence is a property of the build: the CUDA column is there whenever the addon is built, GPU or not.
  it('shows the CUDA column of the op x backend table when the CUDA addon is built, with why no GPU is usable', async function () {
    const status = cudaStatus();
    if (!status.loaded) this.skip();
    const { stdout, error } = await dalle(['info', '--json']);
    assert.equal(error, undefined);
    const report = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.deepEqual(report.opBackends.devices, ['cpu', 'cuda:0']);
    const attention = report.opBackends.rows.find((r: { op: string }) => r.op === 'attention');
    assert.deepEqual(attention.missing['cuda:0'], [], 'the dense attention has its CUDA kernels in the build');
    const text = dalleProcess(['info']);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^ {2}op +cpu +cuda:0$/m);
    if (!status.available) {
      assert.equal(report.opBackendsNote, `no usable GPU here: ${status.reason}`);
      assert.ok(text.stdout.replace(/\s+/g, ' ').includes(`no usable GPU here: ${status.reason.replace(/\s+/g, ' ')}`), text.stdout);
    }
  });
});
