/**
 * `dalle train-prior` as a user runs it: a tiny captioned data set with train/ and val/, a tiny trained dVAE, a tiny
 * prior config; then --tokenizer, --resume, bad input, Ctrl-C in a real process; and `dalle config` for a prior.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import { listCheckpoints } from '../../src/core/checkpoint';
import { hashTree, temporaryDir } from './helpers';
import { makeCaptionedData, makeTinyDvae, readJsonLines, writeTinyPriorConfig } from '../train/prior-helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

describe('commands: train-prior', function () {
  this.timeout(180000);
  let work: string;
  let data: string;
  let dvae: string;
  let config: string;
  let run: string;

  before(async () => {
    work = temporaryDir('dalle-prior-cmd-');
    data = await makeCaptionedData(path.join(work, 'data'));
    dvae = await makeTinyDvae(work, data);
    config = writeTinyPriorConfig(work);
    run = path.join(work, 'runs', 'prior');
    const { error, stdout } = await dalle(['train-prior', '--config', config, '--data', data, '--dvae', dvae, '--out', run]);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /trained 6 updates; checkpoint .*step-6; val loss \d+\.\d+ \(image \d+\.\d+ nats\/token\)/);
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it('writes config.yaml, tokenizer.json, metrics.jsonl (train and val lines), checkpoints and a token cache', () => {
    const cfg = fs.readFileSync(path.join(run, 'config.yaml'), 'utf8');
    assert.match(cfg, /kind: prior/);
    assert.match(cfg, /caption_dropout: 0.2/);
    assert.ok(cfg.includes(`dvae: ${dvae}`));
    assert.ok(fs.existsSync(path.join(run, 'tokenizer.json')));
    const lines = readJsonLines(path.join(run, 'metrics.jsonl'));
    assert.deepEqual(lines.filter((l) => 'loss' in l).map((l) => l.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(lines.filter((l) => 'val_loss' in l).map((l) => l.step), [3, 6]);
    assert.deepEqual(listCheckpoints(run), [3, 6]);
    const state = JSON.parse(fs.readFileSync(path.join(run, 'checkpoints', 'step-6', 'state.json'), 'utf8'));
    assert.equal(state.kind, 'prior');
    const caches = fs.readdirSync(path.join(dvae, 'token-cache'));
    assert.equal(caches.length, 1);
    for (const f of ['train.npy', 'train.captions.jsonl', 'val.npy', 'val.captions.jsonl', 'meta.json']) {
      assert.ok(fs.existsSync(path.join(dvae, 'token-cache', caches[0], f)), f);
    }
  });

  it('--tokenizer uses the given tokenizer (copied into the run); the token cache is reused', async () => {
    const out = path.join(work, 'runs', 'given-tokenizer');
    const tokenizer = path.join(run, 'tokenizer.json');
    const { error, stderr } = await dalle(['train-prior', '--config', config, '--data', data, '--dvae', dvae, '--out', out, '--tokenizer', tokenizer, '--set', 'train.steps=2', '--json']);
    assert.equal(error, undefined, error?.message);
    assert.equal(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8'), fs.readFileSync(tokenizer, 'utf8'));
    assert.doesNotMatch(stderr, /encoding images/);
    assert.equal(fs.readdirSync(path.join(dvae, 'token-cache')).length, 1);
  });

  it('--resume with a larger train.steps extends the run', async () => {
    const { error } = await dalle(['train-prior', '--out', run, '--resume', '--set', 'train.steps=8']);
    assert.equal(error, undefined, error?.message);
    assert.deepEqual(readJsonLines(path.join(run, 'metrics.jsonl')).filter((l) => 'loss' in l).map((l) => l.step), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(fs.readFileSync(path.join(run, 'latest'), 'utf8').trim(), 'checkpoints/step-8');
  });

  it('--resume refuses a --tokenizer other than the run\'s own, changing nothing; the same one is accepted', async () => {
    const captions = path.join(work, 'other-captions.txt');
    fs.writeFileSync(captions, 'a purple triangle\nan orange circle on black\nzebra stripes\n');
    const other = path.join(work, 'other-tokenizer.json');
    const trained = await dalle(['tokenizer', 'train', '--captions', captions, '--out', other, '--vocab', '270']);
    assert.equal(trained.error, undefined, trained.error?.message);
    const before = hashTree(run);
    const refused = await dalle(['train-prior', '--out', run, '--resume', '--tokenizer', other, '--set', 'train.steps=9']);
    assert.equal(refused.error?.name, 'CheckpointError');
    assert.match(refused.error?.message ?? '', /is not the tokenizer .*tokenizer\.json this run was trained with/);
    assert.deepEqual(hashTree(run), before);
    const same = path.join(work, 'same-tokenizer.json');
    fs.copyFileSync(path.join(run, 'tokenizer.json'), same);
    const accepted = await dalle(['train-prior', '--out', run, '--resume', '--tokenizer', same, '--set', 'train.steps=9']);
    assert.equal(accepted.error, undefined, accepted.error?.message);
  });

  it('says what is missing or wrong: no --dvae, a dVAE that is not a run, a grid that does not fit', async () => {
    const noDvae = await dalle(['train-prior', '--config', config, '--data', data, '--out', path.join(work, 'x1')]);
    assert.equal(noDvae.error?.name, 'ConfigError');
    assert.match(noDvae.error?.message ?? '', /data\.dvae/);
    const notRun = await dalle(['train-prior', '--config', config, '--data', data, '--dvae', data, '--out', path.join(work, 'x2')]);
    assert.equal(notRun.error?.name, 'CheckpointError');
    const badGrid = await dalle(['train-prior', '--config', config, '--data', data, '--dvae', dvae, '--out', path.join(work, 'x3'), '--set', 'model.image_vocab=32']);
    assert.equal(badGrid.error?.name, 'ConfigError');
    assert.match(badGrid.error?.message ?? '', /grids of 16 codes/);
  });

  it('dalle config prints the parameter count and a memory estimate of a prior', async () => {
    const { error, stdout } = await dalle(['config', '--config', config]);
    assert.equal(error, undefined, error?.message);
    assert.match(stdout, /parameters: [\d,]+/);
    assert.match(stdout, /training memory/);
  });

  it('Ctrl-C (SIGINT) in a real process checkpoints, exits 130 and says how to resume', async () => {
    const out = path.join(work, 'runs', 'interrupted');
    const child = spawn(
      process.execPath,
      [path.join(ROOT, 'bin', 'run.js'), 'train-prior', '--config', config, '--data', data, '--dvae', dvae, '--out', out, '--tokenizer', path.join(run, 'tokenizer.json'), '--set', 'train.steps=100000', '--set', 'train.checkpoint_every=100000', '--set', 'train.val_every=100000'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.resume();
    const killer = setTimeout(() => child.kill('SIGKILL'), 100000);
    const metricsFile = path.join(out, 'metrics.jsonl');
    let gone = false;
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
      gone = true;
      resolve(code);
    }));
    while (!gone && !(fs.existsSync(metricsFile) && fs.readFileSync(metricsFile, 'utf8').split('\n').length > 3)) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    child.kill('SIGINT');
    const code = await exited;
    clearTimeout(killer);
    assert.equal(code, 130, stderr);
    assert.match(stderr.replace(/\s+/g, ' '), /stopped at update (\d+) of 100000; checkpoint .* resume with: dalle train-prior --out .*interrupted --resume/);
    const stoppedAt = Number(/stopped at update (\d+)/.exec(stderr)?.[1]);
    assert.deepEqual(listCheckpoints(out), [stoppedAt]);
  });
});
