// The bundled default model (models/default) as a user meets it right after `npm ci`: `dalle generate CAPTION` with no
// --prior / --dvae writes a PNG of the dVAE's resolution and a results.jsonl line with a finite log-likelihood.
import * as assert from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { temporaryDir } from './helpers';

const ROOT = path.join(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');

describe('the bundled default model', function () {
  this.timeout(120_000);

  it('ships a prior (with its tokenizer) and a dVAE, under 40 MB', () => {
    const dir = path.join(ROOT, 'models', 'default');
    for (const file of ['prior/config.yaml', 'prior/tokenizer.json', 'prior/latest', 'dvae/config.yaml', 'dvae/latest']) {
      assert.ok(fs.existsSync(path.join(dir, file)), `models/default/${file} is missing`);
    }
    let bytes = 0;
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name));
        else bytes += fs.statSync(path.join(d, e.name)).size;
      }
    };
    walk(dir);
    assert.ok(bytes < 40 * 2 ** 20, `models/default holds ${bytes} bytes`);
  });

  it('`dalle generate "red apple, noto style"` works with no model flags', async () => {
    const out = path.join(temporaryDir('dalle-bundled-'), 'out');
    const run = spawnSync(process.execPath, [BIN, 'generate', 'red apple, noto style', '--out', out, '--samples', '2', '--seed', '7', '--json'], {
      encoding: 'utf8',
      env: { ...process.env, DALLE_THREADS: '1' },
    });
    assert.strictEqual(run.status, 0, run.stderr + run.stdout.slice(-2000));
    const pngs = fs.readdirSync(out).filter((f) => f.endsWith('.png')).sort();
    assert.deepStrictEqual(pngs, ['c00000-s000.png', 'c00000-s001.png']);
    const meta = await sharp(path.join(out, pngs[0])).metadata();
    assert.deepStrictEqual([meta.width, meta.height], [64, 64]);
    const lines = fs.readFileSync(path.join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.strictEqual(lines.length, 2);
    for (const l of lines) {
      assert.strictEqual(l.caption, 'red apple, noto style');
      assert.ok(Number.isFinite(l.log_likelihood) && l.log_likelihood < 0, `log_likelihood ${l.log_likelihood}`);
    }
    // Two samples of one caption differ (they draw from their own streams).
    assert.notDeepStrictEqual(fs.readFileSync(path.join(out, pngs[0])), fs.readFileSync(path.join(out, pngs[1])));
  });
});
