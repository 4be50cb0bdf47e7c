/**
 * `dalle generate --runtime onnx` as a user runs it, against `--runtime engine` on the same tiny dVAE (trained by
 * `dalle train-dvae`) and tiny prior run: the same token grids in results.jsonl for the same seed, captions and
 * sampling options (batch > 1, temperature, top-k, top-p, guidance, an image prompt), from a `dalle export` folder
 * (--onnx DIR) and from the export cache (exported once, then reused); and the errors a user meets.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from '@oclif/test';
import sharp from 'sharp';
import { native } from '../../src/core/native';
import { readResults } from '../../src/core/sample/output';
import { Tensor } from '../../src/core/tensor';
import { TEST_SEED, makeRandom } from '../harness/random';
import { makeImages, temporaryDir, writeTinyConfig } from './helpers';
import { writeRandomPriorRun } from '../harness/random-prior-run';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return runCommand(args, { root: ROOT });
}

/** runCommand joins its arguments and splits them again on spaces, keeping "quoted strings": quote captions. */
function generate(args: string[]) {
  return dalle(['generate', ...args.map((a) => (/\s/.test(a) ? `"${a}"` : a))]);
}

const CAPTIONS = ['red apple, noto style', 'a green square', 'blue sky, twemoji style'];

/**
 * A prior run directory (config.yaml, tokenizer.json, checkpoints/step-0) for the tiny dVAE's 8x8 grids of 16 codes,
 * with random weights scaled up from the init's std 0.02 so the next-token distributions are far from uniform (top-k
 * and top-p then cut real tails, and near-ties that float rounding could reorder are rare).
 */
async function makePriorRun(dir: string, weightSeed: number): Promise<string> {
  return writeRandomPriorRun(dir, {
    captions: [...CAPTIONS, 'red green blue apple square sky', 'noto twemoji style'],
    vocabSize: 280,
    layers: 2,
    sets: ['runtime.seed=3'],
    weightSeed,
    adjust: (model) => {
      const rnd = makeRandom(weightSeed);
      for (const [, p] of model.namedParameters()) {
        const values = p.rank === 1 ? Float32Array.from({ length: p.size }, () => 1 + 0.2 * rnd.normal()) : Float32Array.from(p.toArray() as Float32Array, (v) => 8 * v);
        const src = Tensor.from(values, p.shape);
        native.cast(p.address, 'f32', src.address, 'f32', p.size);
        src.dispose();
      }
    },
  });
}

function lastJson(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** caption/sample -> token grid and log-likelihood, from DIR/results.jsonl. */
function grids(dir: string): Map<string, { grid: number[]; ll: number }> {
  const out = new Map<string, { grid: number[]; ll: number }>();
  for (const r of readResults(dir)) {
    assert.ok(Array.isArray(r.grid) && r.grid.length === 64, `record ${r.file} has its 8x8 grid`);
    out.set(`${r.caption_index}/${r.sample}`, { grid: r.grid, ll: r.log_likelihood });
  }
  return out;
}

function assertSameTokens(engineDir: string, onnxDir: string, units: number): void {
  const a = grids(engineDir);
  const b = grids(onnxDir);
  assert.equal(a.size, units);
  assert.deepEqual([...b.keys()], [...a.keys()]);
  for (const [unit, { grid, ll }] of a) {
    assert.deepEqual(b.get(unit)!.grid, grid, `unit ${unit}: the same tokens`);
    assert.ok(Math.abs(b.get(unit)!.ll - ll) < 1e-3, `unit ${unit}: log-likelihood ${b.get(unit)!.ll} vs ${ll}`);
  }
  // The samples are not all alike (the comparison is not between constant grids).
  assert.ok(new Set([...a.values()].map((v) => v.grid.join(','))).size > 1);
}

describe('commands: generate --runtime onnx', function () {
  this.timeout(300000);
  const seed = TEST_SEED % 1000;
  let work: string;
  let dvae: string;
  let prior: string;
  let exported: string;
  const savedCache = process.env.DALLE_ONNX_CACHE;

  before(async () => {
    work = temporaryDir('dalle-gen-onnx-');
    const images = await makeImages(path.join(work, 'images'), 8);
    dvae = path.join(work, 'runs', 'dvae');
    const trained = await dalle(['train-dvae', '--config', writeTinyConfig(work), '--data', images, '--out', dvae]);
    assert.equal(trained.error, undefined, trained.error?.message);
    prior = await makePriorRun(path.join(work, 'runs', 'prior'), 11);
    exported = path.join(work, 'onnx');
    const made = await dalle(['export', '--dvae', dvae, '--prior', prior, '--out', exported, '--no-check']);
    assert.equal(made.error, undefined, made.error?.message);
    process.env.DALLE_ONNX_CACHE = path.join(work, 'cache');
  });

  after(() => {
    if (savedCache === undefined) delete process.env.DALLE_ONNX_CACHE;
    else process.env.DALLE_ONNX_CACHE = savedCache;
  });

  afterEach(() => {
    process.exitCode = undefined;
  });

  it(`--onnx DIR: the engine's tokens, batch 4, temperature, top-k, top-p and guidance (seed ${seed})`, async () => {
    const base = [...CAPTIONS, '--prior', prior, '--dvae', dvae, '--samples', '3', '--batch', '4', '--seed', String(seed), '--temperature', '0.9', '--top-k', '6', '--top-p', '0.9', '--cond-scale', '1.5', '--threads', '1'];
    const engineDir = path.join(work, 'engine-1');
    const engine = await generate([...base, '--out', engineDir]);
    assert.equal(engine.error, undefined, engine.error?.message);
    const onnxDir = path.join(work, 'onnx-1');
    const onnx = await generate([...base, '--out', onnxDir, '--runtime', 'onnx', '--onnx', exported, '--json']);
    assert.equal(onnx.error, undefined, onnx.error?.message);
    const result = lastJson(onnx.stdout);
    assert.equal(result.runtime, 'onnx');
    assert.deepEqual(result.onnx, { prior: path.resolve(exported), dvae: path.resolve(exported), source: 'given' });
    assert.equal(result.generated, 9);
    assertSameTokens(engineDir, onnxDir, 9);
    // The PNGs come from the ONNX decoder: the same names, complete images.
    assert.deepEqual(fs.readdirSync(onnxDir).filter((f) => f.endsWith('.png')).sort(), fs.readdirSync(engineDir).filter((f) => f.endsWith('.png')).sort());
  });

  it('without --onnx: exports into the cache once, reuses it, and gives the engine\'s tokens (top-p, image prompt, batch 2)', async () => {
    const prompt = path.join(work, 'images', '003.png');
    const base = [CAPTIONS[0], CAPTIONS[2], '--prior', prior, '--dvae', dvae, '--samples', '2', '--batch', '2', '--seed', String(seed + 1), '--top-p', '0.8', '--image', prompt, '--keep-rows', '3', '--threads', '1'];
    const engineDir = path.join(work, 'engine-2');
    const engine = await generate([...base, '--out', engineDir]);
    assert.equal(engine.error, undefined, engine.error?.message);
    const first = await generate([...base, '--out', path.join(work, 'onnx-2a'), '--runtime', 'onnx', '--json']);
    assert.equal(first.error, undefined, first.error?.message);
    const firstResult = lastJson(first.stdout) as { onnx: { prior: string; dvae: string; source: string } };
    assert.equal(firstResult.onnx.source, 'exported');
    const cache = process.env.DALLE_ONNX_CACHE!;
    assert.equal(path.dirname(firstResult.onnx.prior), cache);
    assert.match(path.basename(firstResult.onnx.prior), /^prior-[0-9a-f]{16}$/);
    assert.match(path.basename(firstResult.onnx.dvae), /^dvae-[0-9a-f]{16}$/);
    for (const f of ['prior.onnx', 'prior.json', 'export.json']) assert.ok(fs.existsSync(path.join(firstResult.onnx.prior, f)), f);
    for (const f of ['dvae-encoder.onnx', 'dvae-decoder.onnx', 'dvae.json', 'export.json']) assert.ok(fs.existsSync(path.join(firstResult.onnx.dvae, f)), f);
    assert.deepEqual(fs.readdirSync(cache).filter((f) => f.startsWith('.')), [], 'no temporary folders left');
    const second = await generate([...base, '--out', path.join(work, 'onnx-2b'), '--runtime', 'onnx', '--json']);
    assert.equal(second.error, undefined, second.error?.message);
    assert.deepEqual(lastJson(second.stdout).onnx, { ...firstResult.onnx, source: 'cached' });
    assertSameTokens(engineDir, path.join(work, 'onnx-2a'), 4);
    assertSameTokens(engineDir, path.join(work, 'onnx-2b'), 4);
    // The prompt's top 3 rows are kept in every grid.
    const rows = [...grids(engineDir).values()].map((v) => v.grid.slice(0, 24).join(','));
    assert.equal(new Set(rows).size, 1);
  });

  it('a damaged cached export is exported again', async () => {
    const base = [CAPTIONS[1], '--prior', prior, '--dvae', dvae, '--samples', '1', '--seed', String(seed), '--threads', '1', '--runtime', 'onnx', '--json'];
    const first = await generate([...base, '--out', path.join(work, 'onnx-3a')]);
    assert.equal(first.error, undefined, first.error?.message);
    const dirs = lastJson(first.stdout).onnx as { prior: string };
    fs.writeFileSync(path.join(dirs.prior, 'prior.onnx'), Buffer.from('not a model'));
    const again = await generate([...base, '--out', path.join(work, 'onnx-3b')]);
    assert.equal(again.error, undefined, again.error?.message);
    assert.equal((lastJson(again.stdout).onnx as { source: string }).source, 'exported');
    assert.deepEqual(grids(path.join(work, 'onnx-3b')), grids(path.join(work, 'onnx-3a')));
  });

  it('refuses an export folder with missing files, of another prior, --onnx without --runtime onnx, and a missing folder', async () => {
    const base = [CAPTIONS[0], '--prior', prior, '--dvae', dvae, '--samples', '1', '--threads', '1'];
    const dvaeOnly = path.join(work, 'onnx-dvae-only');
    const made = await dalle(['export', '--dvae', dvae, '--out', dvaeOnly, '--no-check']);
    assert.equal(made.error, undefined, made.error?.message);
    const partial = await generate([...base, '--out', path.join(work, 'bad-1'), '--runtime', 'onnx', '--onnx', dvaeOnly]);
    assert.equal(partial.error?.oclif?.exit, 4);
    assert.match(partial.error!.message, /not a complete export of a prior and a dVAE: prior\.onnx, prior\.json are missing/);
    assert.match(((partial.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /export both models into it: dalle export --prior .* --dvae .* --out .*onnx-dvae-only/);

    // Same architecture, other weights: caught by the weights digest prior.json records.
    const other = await makePriorRun(path.join(work, 'runs', 'prior-other'), 12);
    const otherDir = path.join(work, 'onnx-other');
    const exportedOther = await dalle(['export', '--dvae', dvae, '--prior', other, '--out', otherDir, '--no-check']);
    assert.equal(exportedOther.error, undefined, exportedOther.error?.message);
    const mismatch = await generate([...base, '--out', path.join(work, 'bad-2'), '--runtime', 'onnx', '--onnx', otherDir]);
    assert.equal(mismatch.error?.oclif?.exit, 4);
    assert.match(mismatch.error!.message, /the prior exported in .*onnx-other \(from .*prior-other.*\) is not the prior given \(.*runs\/prior\/checkpoints\/step-0, update 0\): their weights differ/);

    const flags = await generate([...base, '--out', path.join(work, 'bad-3'), '--onnx', exported]);
    assert.equal(flags.error?.oclif?.exit, 2);
    assert.match(flags.error!.message, /--onnx DIR needs --runtime onnx/);

    const missing = await generate([...base, '--out', path.join(work, 'bad-4'), '--runtime', 'onnx', '--onnx', path.join(work, 'nowhere')]);
    assert.equal(missing.error?.oclif?.exit, 4);
    assert.match(missing.error!.message, /--onnx .*nowhere does not exist/);
    for (const dir of ['bad-1', 'bad-2', 'bad-4']) assert.equal(fs.existsSync(path.join(work, dir, 'results.jsonl')), false);
  });

  it('refuses an export that records no weights (an older dalle), though its graphs would pass the check against the engine', async () => {
    const base = [CAPTIONS[0], '--prior', prior, '--dvae', dvae, '--samples', '1', '--threads', '1'];
    const old = path.join(work, 'onnx-old');
    fs.cpSync(exported, old, { recursive: true });
    for (const file of ['prior.json', 'dvae.json']) {
      const { weightsSha256: _dropped, ...info } = JSON.parse(fs.readFileSync(path.join(old, file), 'utf8'));
      fs.writeFileSync(path.join(old, file), JSON.stringify(info));
    }
    const unrecorded = await generate([...base, '--out', path.join(work, 'bad-5'), '--runtime', 'onnx', '--onnx', old]);
    assert.equal(unrecorded.error?.oclif?.exit, 4);
    assert.match(unrecorded.error!.message, /onnx-old\/prior\.json does not record the weights .* cannot be checked against the prior given/);
    assert.match(((unrecorded.error as { suggestions?: string[] }).suggestions ?? []).join(' '), /export it again: dalle export --prior .* --dvae .* --out .*onnx-old; or leave --onnx out/);
    assert.equal(fs.existsSync(path.join(work, 'bad-5', 'results.jsonl')), false);
  });

  it('the export cache is keyed on the weights: a checkpoint rewritten in place at the same path gets a new export', async () => {
    const swapped = path.join(work, 'runs', 'dvae-swapped');
    fs.cpSync(dvae, swapped, { recursive: true });
    const base = [CAPTIONS[2], '--prior', prior, '--dvae', swapped, '--samples', '2', '--seed', String(seed), '--threads', '1', '--runtime', 'onnx', '--json'];
    const before = await generate([...base, '--out', path.join(work, 'swap-a')]);
    assert.equal(before.error, undefined, before.error?.message);
    const beforeDvae = (lastJson(before.stdout).onnx as { dvae: string }).dvae;

    // Other weights of the same architecture (another seed), written over the checkpoint: same path, same update count.
    const otherRun = path.join(work, 'runs', 'dvae-seed-5');
    const trained = await dalle(['train-dvae', '--config', writeTinyConfig(work), '--data', path.join(work, 'images'), '--out', otherRun, '--seed', '5']);
    assert.equal(trained.error, undefined, trained.error?.message);
    const step8 = path.join(swapped, 'checkpoints', 'step-8');
    fs.rmSync(step8, { recursive: true });
    fs.cpSync(path.join(otherRun, 'checkpoints', 'step-8'), step8, { recursive: true });

    const after = await generate([...base, '--out', path.join(work, 'swap-b')]);
    assert.equal(after.error, undefined, after.error?.message);
    const onnx = lastJson(after.stdout).onnx as { dvae: string; source: string };
    assert.equal(onnx.source, 'exported', 'the dVAE was exported again');
    assert.notEqual(onnx.dvae, beforeDvae);
    // The new weights decode the images: the same as the engine's with the rewritten checkpoint.
    const engine = await generate([...base.filter((a) => a !== '--runtime' && a !== 'onnx'), '--out', path.join(work, 'swap-engine')]);
    assert.equal(engine.error, undefined, engine.error?.message);
    const pixels = async (dir: string): Promise<Buffer[]> => Promise.all(readResults(dir).map((r) => sharp(path.join(dir, r.file)).raw().toBuffer()));
    const [fromOnnx, fromEngine, fromOld] = await Promise.all([pixels(path.join(work, 'swap-b')), pixels(path.join(work, 'swap-engine')), pixels(path.join(work, 'swap-a'))]);
    for (let i = 0; i < fromEngine.length; i++) {
      let worst = 0;
      for (let j = 0; j < fromEngine[i].length; j++) worst = Math.max(worst, Math.abs(fromOnnx[i][j] - fromEngine[i][j]));
      assert.ok(worst <= 1, `image ${i}: onnx and engine differ by ${worst} levels`);
    }
    assert.ok(fromOld.some((b, i) => !b.equals(fromEngine[i])), 'the old weights decoded other pixels');
  });
});
