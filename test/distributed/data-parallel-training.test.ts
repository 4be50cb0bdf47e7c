/**
 * Data-parallel training as users run it, in real processes over Gloo on this machine: `dalle launch --nproc N`
 * (and ranks started by hand with torchrun-style variables, as Slurm or Kubernetes would start them).
 * - N ranks x (B / N) examples make the updates of 1 process x B (train.batch_size is the global batch): the dVAE,
 *   the prior and CLIP (its contrastive loss over the gathered global batch), 20 updates, 2 and 4 ranks, weights
 *   compared;
 * - a run resumed with another number of ranks continues the data order (2 ranks to update 10, 4 ranks to 20 = one
 *   process to 20);
 * - a rank killed mid-run makes the others stop within runtime.dist_timeout_s, naming it; the last checkpoint resumes;
 * - SIGTERM to every rank (what Slurm and Kubernetes send): all stop at the same update, one checkpoint, exit 143;
 * - a global batch the ranks cannot share equally is refused before anything is written.
 * Without the Gloo addon (Debian's libgloo-dev absent at build time) every test says it is skipped and why.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { glooStatus } from '../../src/core/distributed/gloo';
import { readSafetensorsSync } from '../../src/core/io/safetensors';
import { TINY_YAML, makeImages, temporaryDir } from '../commands/helpers';
import { makeCaptionedData, makeTinyDvae, writeTinyPriorConfig } from '../train/prior-helpers';
import { freePort } from './gloo-ranks';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CLI = path.join(ROOT, 'bin', 'run.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `dalle <args>` in a child process (DALLE_THREADS=1: N ranks share 2 cores). */
function dalle(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return finished(spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, DALLE_THREADS: '1', ...env } }));
}

function finished(child: ChildProcess): Promise<Run> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => (stdout += d));
  child.stderr?.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

function ok(run: Run, what: string): void {
  assert.equal(run.code, 0, `${what} failed (${run.code ?? run.signal}):\n${run.stderr.slice(-3000)}`);
}

/**
 * How far two checkpoints' weights are apart: the largest |a - b| / max|a| over each tensor, leaving out tensors whose
 * values are all rounding noise (max|a| < 1e-5: the attention key biases, whose true gradient is 0: softmax does not
 * change when every key moves by the same amount, so each update is AdamW normalising float noise).
 */
function weightDifference(a: string, b: string): { relative: number; tensor: string; noiseOnly: string[] } {
  const ta = readSafetensorsSync(path.join(a, 'model.safetensors')).tensors;
  const tb = readSafetensorsSync(path.join(b, 'model.safetensors')).tensors;
  assert.deepEqual([...tb.keys()], [...ta.keys()]);
  let relative = 0;
  let tensor = '';
  const noiseOnly: string[] = [];
  for (const [name, x] of ta) {
    const y = tb.get(name)!;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < x.data.length; i++) {
      diff = Math.max(diff, Math.abs(Number(x.data[i]) - Number(y.data[i])));
      scale = Math.max(scale, Math.abs(Number(x.data[i])));
    }
    if (scale < 1e-5) {
      noiseOnly.push(name);
      continue;
    }
    if (diff / scale > relative) {
      relative = diff / scale;
      tensor = name;
    }
  }
  return { relative, tensor, noiseOnly };
}

function skipWithoutGloo(ctx: Mocha.Context): void {
  const status = glooStatus();
  if (!status.available) {
    console.log(`      skipped: data-parallel training needs the Gloo addon: ${status.reason}`);
    ctx.skip();
  }
}

/** Lines of RUN/metrics.jsonl (train lines only). */
function trainLines(run: string): Array<Record<string, number>> {
  return fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'loss' in l);
}

describe('distributed: data-parallel training (real processes over Gloo)', function () {
  this.timeout(240_000);
  let work: string;
  let images: string;
  let dvaeConfig: string;
  let captioned: string;
  let dvaeRun: string;
  let priorConfig: string;
  const steps = ['--set', 'train.steps=20', '--set', 'train.batch_size=8', '--set', 'train.checkpoint_every=10'];

  before(async function () {
    if (!glooStatus().available) return;
    work = temporaryDir('dalle-dp-');
    images = await makeImages(path.join(work, 'images'), 12);
    dvaeConfig = path.join(work, 'tiny-dvae.yaml');
    fs.writeFileSync(dvaeConfig, TINY_YAML);
    captioned = await makeCaptionedData(path.join(work, 'captioned'));
    dvaeRun = await makeTinyDvae(work, captioned);
    priorConfig = writeTinyPriorConfig(work);
  });

  const trainers = {
    dvae: () => ['train-dvae', '--config', dvaeConfig, '--data', images],
    prior: () => ['train-prior', '--config', priorConfig, '--data', captioned, '--dvae', dvaeRun, '--set', 'train.val_every=10'],
  };

  // CLIP's settings are flags: the same 20 updates of 8 pairs, checkpoints every 10.
  const clip = () => ['train-clip', '--data', path.join(captioned, 'train'), '--steps', '20', '--batch-size', '8', '--vocab', '270', '--resolution', '16', '--checkpoint-every', '10', '--lr', '3e-3'];
  const runArgs = { dvae: () => [...trainers.dvae(), ...steps], prior: () => [...trainers.prior(), ...steps], clip };

  for (const kind of ['dvae', 'prior', 'clip'] as const) {
    it(`${kind}: 2 and 4 ranks x (8 / N) examples make the 20 updates of 1 process x 8`, async function () {
      skipWithoutGloo(this);
      const one = path.join(work, `${kind}-1`);
      ok(await dalle([...runArgs[kind](), '--out', one]), 'one process');
      const reference = trainLines(one);
      for (const ranks of [2, 4]) {
        const out = path.join(work, `${kind}-${ranks}`);
        const run = await dalle(['launch', '--nproc', String(ranks), '--', ...runArgs[kind](), '--out', out]);
        ok(run, `${ranks} ranks`);
        const d = weightDifference(path.join(one, 'checkpoints', 'step-20'), path.join(out, 'checkpoints', 'step-20'));
        console.log(`      ${kind}, ${ranks} ranks vs 1 process after 20 updates: largest relative weight difference ${d.relative.toExponential(2)} (${d.tensor})${d.noiseOnly.length ? `; left out as rounding noise only: ${d.noiseOnly.join(', ')}` : ''}`);
        assert.ok(d.relative < 1e-4, `${ranks} ranks: ${d.relative} in ${d.tensor}`);
        // The run's files are rank 0's alone: one metrics line per update, the same losses.
        const lines = trainLines(out);
        assert.equal(lines.length, reference.length);
        lines.forEach((l, i) => assert.ok(Math.abs(l.loss - reference[i].loss) <= 1e-4 * Math.abs(reference[i].loss), `update ${i + 1}: ${l.loss} vs ${reference[i].loss}`));
        assert.equal(lines[0].allreduce_bytes > 0, true, 'metrics report the bytes all-reduced');
        // Validation (the prior's): each rank computes every N-th batch, the sums over ranks give the split's loss.
        const val = (run: string) => fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'val_loss' in l);
        val(out).forEach((l, i) => {
          const r = val(one)[i];
          assert.equal(l.val_examples, r.val_examples);
          assert.ok(Math.abs(l.val_loss - r.val_loss) <= 1e-5 * r.val_loss, `val ${l.val_loss} vs ${r.val_loss}`);
        });
      }
    });
  }

  it('prior in fp16: the per-resblock gradient scales start at 2^13 x N and move alike on every rank', async function () {
    skipWithoutGloo(this);
    const fp16 = ['--precision', 'fp16', '--set', 'train.log_every=1'];
    const one = path.join(work, 'prior-fp16-1');
    ok(await dalle([...trainers.prior(), '--out', one, ...steps, ...fp16]), 'one process');
    const two = path.join(work, 'prior-fp16-2');
    ok(await dalle(['launch', '--nproc', '2', '--', ...trainers.prior(), '--out', two, ...steps, ...fp16]), '2 ranks');
    const [a, b] = [trainLines(one), trainLines(two)] as unknown as Array<Array<{ grad_scales: number[]; skipped: number; loss: number }>>;
    assert.deepEqual(a[0].grad_scales.map((x) => x * 2), b[0].grad_scales, 'the first update runs at 2^13 x 2 on 2 ranks');
    // Scales are init x M and grow alike: the ratio stays 2 while no rank overflows (the same skips on both runs).
    b.forEach((line, i) => {
      assert.equal(line.skipped, a[i].skipped);
      line.grad_scales.forEach((s, r) => assert.ok(Math.abs(s / a[i].grad_scales[r] - 2) < 1e-9, `update ${i + 1}, resblock ${r}`));
      assert.ok(Math.abs(line.loss - a[i].loss) <= 2e-3 * Math.abs(a[i].loss), `update ${i + 1}: ${line.loss} vs ${a[i].loss}`);
    });
  });

  it('a run resumed with another number of ranks continues the data order (2 ranks to 10, then 4 ranks to 20)', async function () {
    skipWithoutGloo(this);
    const one = path.join(work, 'dvae-1');
    if (!fs.existsSync(path.join(one, 'checkpoints', 'step-20'))) ok(await dalle([...trainers.dvae(), '--out', one, ...steps]), 'one process');
    const out = path.join(work, 'dvae-resized');
    ok(await dalle(['launch', '--nproc', '2', '--', ...trainers.dvae(), '--out', out, ...steps, '--set', 'train.steps=10']), '2 ranks');
    ok(await dalle(['launch', '--nproc', '4', '--', 'train-dvae', '--out', out, '--resume', '--set', 'train.steps=20']), '4 ranks, resumed');
    const d = weightDifference(path.join(one, 'checkpoints', 'step-20'), path.join(out, 'checkpoints', 'step-20'));
    console.log(`      dVAE 2 ranks to 10 then 4 ranks to 20 vs 1 process to 20: largest relative weight difference ${d.relative.toExponential(2)}`);
    assert.ok(d.relative < 1e-4, `${d.relative} in ${d.tensor}`);
  });

  /** Ranks started by hand, each with the variables a cluster launcher sets (RANK, WORLD_SIZE, ...). */
  async function startRanks(ranks: number, args: string[]): Promise<Array<{ child: ChildProcess; done: Promise<Run> }>> {
    const port = await freePort();
    return Array.from({ length: ranks }, (_, rank) => {
      const env = { ...process.env, DALLE_THREADS: '1', RANK: String(rank), WORLD_SIZE: String(ranks), LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) };
      const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env });
      return { child, done: finished(child) };
    });
  }

  async function waitForCheckpoint(run: string, step: number, deadlineMs: number): Promise<void> {
    const until = Date.now() + deadlineMs;
    while (!fs.existsSync(path.join(run, 'checkpoints', `step-${step}`))) {
      if (Date.now() > until) throw new Error(`no checkpoint ${step} in ${run} after ${deadlineMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('a rank killed mid-run makes the others stop within runtime.dist_timeout_s, naming it; the last checkpoint resumes', async function () {
    skipWithoutGloo(this);
    const out = path.join(work, 'killed');
    const args = [...trainers.dvae(), '--out', out, '--set', 'train.steps=100000', '--set', 'train.checkpoint_every=5', '--set', 'train.batch_size=6', '--set', 'runtime.dist_timeout_s=10'];
    const ranks = await startRanks(3, args);
    await waitForCheckpoint(out, 5, 60_000);
    const killedAt = Date.now();
    ranks[2].child.kill('SIGKILL');
    const [zero, one] = await Promise.all([ranks[0].done, ranks[1].done]);
    const seconds = (Date.now() - killedAt) / 1000;
    console.log(`      rank 2 killed: ranks 0 and 1 exited ${zero.code} and ${one.code} after ${seconds.toFixed(1)} s; rank 0 said: ${zero.stderr.split('\n').find((l) => /rank 2/.test(l))?.trim()}`);
    assert.ok(seconds < 10, `the others took ${seconds} s (timeout 10 s)`);
    for (const r of [zero, one]) {
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /rank 2/);
    }
    // What is left is a run that resumes (one process now), from its last checkpoint.
    const resumed = await dalle(['train-dvae', '--out', out, '--resume', '--set', 'train.steps=12', '--set', 'runtime.dist_timeout_s=300']);
    ok(resumed, 'resume after the kill');
    assert.match(resumed.stdout, /trained 12 updates/);
  });

  it('SIGTERM to every rank: all stop after the same update with one checkpoint, exit 143, and --resume continues', async function () {
    skipWithoutGloo(this);
    const out = path.join(work, 'terminated');
    const args = [...trainers.dvae(), '--out', out, '--set', 'train.steps=100000', '--set', 'train.checkpoint_every=100000', '--set', 'train.batch_size=8', '--set', 'train.log_every=1'];
    const ranks = await startRanks(2, args);
    const metrics = path.join(out, 'metrics.jsonl');
    const until = Date.now() + 60_000;
    while (!(fs.existsSync(metrics) && fs.readFileSync(metrics, 'utf8').split('\n').length > 4)) {
      if (Date.now() > until) throw new Error('no training progress');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Slurm signals every task, not at the same instant: rank 1 a little later.
    ranks[0].child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 150));
    ranks[1].child.kill('SIGTERM');
    const results = await Promise.all(ranks.map((r) => r.done));
    for (const r of results) assert.equal(r.code, 143, r.stderr.slice(-2000));
    const stoppedAt = results.map((r) => Number(/stopped at update (\d+)/.exec(r.stderr.replace(/\s+/g, ' '))?.[1]));
    assert.equal(stoppedAt[0], stoppedAt[1], 'both ranks stopped after the same update');
    const checkpoints = fs.readdirSync(path.join(out, 'checkpoints')).filter((d) => d.startsWith('step-'));
    assert.deepEqual(checkpoints, [`step-${stoppedAt[0]}`]);
    const resumed = await dalle(['launch', '--nproc', '2', '--', 'train-dvae', '--out', out, '--resume', '--set', `train.steps=${stoppedAt[0] + 2}`]);
    ok(resumed, 'resume');
  });

  it('refuses a global batch that the ranks cannot share equally, before writing anything', async function () {
    skipWithoutGloo(this);
    const out = path.join(work, 'uneven');
    const run = await dalle(['launch', '--nproc', '3', '--', ...trainers.dvae(), '--out', out, '--set', 'train.batch_size=8']);
    assert.equal(run.code, 3, run.stderr);
    assert.match(run.stderr.replace(/\s+/g, ' '), /train\.batch_size: is 8, which 3 data-parallel ranks cannot share equally/);
    assert.ok(!fs.existsSync(path.join(out, 'config.yaml')), 'nothing written');
  });
});
