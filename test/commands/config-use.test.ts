/**
 * A --set (or a runtime flag) that a command does not read is a config error (exit 3) naming the key, the command and
 * the keys it reads, before any work, instead of being accepted with no effect. Run as a user runs the commands.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Config } from '@oclif/core';
import { runCommand } from '@oclif/test';
import { makeImages, temporaryDir } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** The one-line message and the hint, as oclif prints them (long lines wrapped: whitespace collapsed). */
function configErrorOf(result: Awaited<ReturnType<typeof dalle>>): { message: string; hint: string } {
  const error = result.error as (Error & { oclif?: { exit?: number }; hint?: string }) | undefined;
  assert.equal(error?.name, 'ConfigError', error?.stack ?? 'no error');
  assert.equal(error?.oclif?.exit, 3);
  return { message: error.message, hint: error.hint ?? '' };
}

describe('commands: --set keys a command does not read are refused', function () {
  this.timeout(60000);
  let work: string;
  let images: string;

  before(async () => {
    work = temporaryDir('dalle-config-use-');
    images = await makeImages(path.join(work, 'images'), 2);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('generate --set model.n_layers=2: the prior comes from its run, so the key is refused, naming what generate reads', async () => {
    const result = await dalle(['generate', 'a red apple', '--out', path.join(work, 'gen'), '--set', 'model.n_layers=2']);
    const { message, hint } = configErrorOf(result);
    assert.equal(
      message,
      '--set model.n_layers=2: model.n_layers: `dalle generate` does not read this key, so it would change nothing ' +
        "(the models' settings come from the --prior and --dvae runs; sampling has its own flags)",
    );
    assert.equal(hint, '`dalle generate` reads only runtime.threads, runtime.device, runtime.seed');
    assert.equal(fs.existsSync(path.join(work, 'gen')), false, 'nothing was written');
  });

  it('a runtime flag the command does not read is refused too (generate --precision bf16)', async () => {
    const { message } = configErrorOf(await dalle(['generate', 'a red apple', '--out', path.join(work, 'p'), '--precision', 'bf16']));
    assert.match(message, /^--precision bf16: runtime\.precision: `dalle generate` does not read this key/);
  });

  it('encode and evaluate recon read only the engine keys: train.lr and runtime.seed are refused', async () => {
    const encode = configErrorOf(await dalle(['encode', '--dvae', path.join(work, 'none'), 'a.png', '--out', path.join(work, 'a.npy'), '--set', 'train.lr=1']));
    assert.match(encode.message, /^--set train\.lr=1: train\.lr: `dalle encode` does not read this key/);
    assert.equal(encode.hint, '`dalle encode` reads only runtime.threads, runtime.device');
    const recon = configErrorOf(await dalle(['evaluate', 'recon', '--dvae', path.join(work, 'none'), '--data', work, '--seed', '3']));
    assert.match(recon.message, /^--seed 3: runtime\.seed: `dalle evaluate recon` does not read this key/);
  });

  it('dataset inspect reads no config: --set and --config are refused', async () => {
    const set = configErrorOf(await dalle(['dataset', 'inspect', work, '--set', 'runtime.seed=1']));
    assert.equal(set.message, '--set runtime.seed=1: `dalle dataset inspect` reads no config, so this would change nothing');
    assert.equal(set.hint, 'leave out --set');
    const file = path.join(work, 'any.yaml');
    fs.writeFileSync(file, 'kind: dvae\n');
    const config = configErrorOf(await dalle(['dataset', 'inspect', work, '--config', file]));
    assert.equal(config.message, `--config ${file}: \`dalle dataset inspect\` reads no config, so this would change nothing`);
  });

  it('tokenizer train reads model.text_vocab and data.lowercase only', async () => {
    const captions = path.join(work, 'captions.txt');
    fs.writeFileSync(captions, 'a red apple\na grinning cat\n'.repeat(20));
    const refused = configErrorOf(await dalle(['tokenizer', 'train', '--captions', captions, '--out', path.join(work, 't.json'), '--set', 'model.n_layers=2']));
    assert.equal(refused.hint, '`dalle tokenizer train` reads only model.text_vocab, data.lowercase');
    const used = await dalle(['tokenizer', 'train', '--captions', captions, '--out', path.join(work, 't.json'), '--set', 'model.text_vocab=260']);
    assert.equal(used.error, undefined, used.error?.message);
    assert.match(used.stdout, /trained 260 tokens/);
  });

  it('tokenizer encode and dataset emoji take --set runtime.seed like --seed (it is the key they read)', async () => {
    const captions = path.join(work, 'captions-2.txt');
    fs.writeFileSync(captions, 'a red apple\na grinning cat\n'.repeat(20));
    const tokenizer = path.join(work, 't2.json');
    assert.equal((await dalle(['tokenizer', 'train', '--captions', captions, '--vocab', '270', '--out', tokenizer])).error, undefined);
    const encode = (args: string[]) => dalle(['tokenizer', 'encode', '--tokenizer', tokenizer, '--dropout', '0.5', 'a grinning apple', '--json', ...args]);
    const bySet = (await encode(['--set', 'runtime.seed=5'])).result;
    const byFlag = (await encode(['--seed', '5'])).result;
    assert.deepEqual(bySet, byFlag);
    const emoji = configErrorOf(await dalle(['dataset', 'emoji', '--out', path.join(work, 'emoji'), '--set', 'data.resolution=32']));
    assert.equal(emoji.hint, '`dalle dataset emoji` reads only runtime.seed');
  });

  it('train-dvae: every section fresh (not runtime.precision); with --resume model.* is refused, train.* taken', async () => {
    const run = path.join(work, 'run');
    const resumed = configErrorOf(await dalle(['train-dvae', '--out', run, '--resume', '--set', 'model.n_hid=4']));
    assert.match(resumed.message, /^--set model\.n_hid=4: model\.n_hid: `dalle train-dvae` does not read this key, so it would change nothing \(with --resume the model is the run's/);
    assert.doesNotMatch(resumed.hint, /\bmodel\b/);
    const precision = configErrorOf(await dalle(['train-dvae', '--out', run, '--precision', 'fp16']));
    assert.match(precision.message, /runtime\.precision: `dalle train-dvae` does not read this key.*fp32 only/);
    // train.* passes this check (the run's absence is what fails), and a fresh run takes model.*
    const steps = await dalle(['train-dvae', '--out', run, '--resume', '--set', 'train.steps=10']);
    assert.equal(steps.error?.name, 'CheckpointError');
    const fresh = await dalle(['train-dvae', '--out', run, '--set', 'model.n_hid=4']);
    assert.match(fresh.error?.message ?? '', /^data\.path: is not set/); // past the check: only --data is missing
  });

  it('train-prior --resume refuses model.* but takes the other sections', async () => {
    const run = path.join(work, 'prior-run');
    const { message } = configErrorOf(await dalle(['train-prior', '--out', run, '--resume', '--set', 'model.n_layers=2']));
    assert.match(message, /`dalle train-prior` does not read this key, so it would change nothing \(with --resume the model is the run's/);
    const steps = await dalle(['train-prior', '--out', run, '--resume', '--set', 'train.steps=10', '--precision', 'bf16']);
    assert.doesNotMatch(steps.error?.message ?? '', /does not read/);
  });

  it('a misspelled key is still reported as unknown, with the likeliest spelling', async () => {
    const result = await dalle(['generate', 'a red apple', '--out', path.join(work, 'typo'), '--set', 'runtime.sed=2']);
    assert.match(configErrorOf(result).message, /runtime\.sed: unknown key; did you mean "runtime\.seed"\?/);
  });

  it('dalle config takes every key of either kind', async () => {
    const { error, result } = await dalle(['config', '--kind', 'prior', '--set', 'model.n_layers=2', '--precision', 'bf16']);
    assert.equal(error, undefined, error?.message);
    assert.equal((result as { model: { n_layers: number } }).model.n_layers, 2);
  });

  it('DALLE_THREADS in the environment is not refused where threads are not read (a child process, as a user runs it)', () => {
    const child = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), 'dataset', 'inspect', images], {
      encoding: 'utf8',
      env: { ...process.env, DALLE_THREADS: '2' },
    });
    assert.equal(child.status, 0, child.stderr);
  });

  it('every command declares the config keys it reads', async () => {
    const config = await Config.load(ROOT);
    assert.ok(config.commands.length > 15);
    for (const command of config.commands) {
      const loaded = await command.load();
      assert.ok(Object.hasOwn(loaded, 'configUse'), `${command.id} declares static configUse`);
    }
  });
});
