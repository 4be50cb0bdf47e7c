/**
 * native/collective/build.js without compiling: where it skips it says why (in its report, which gloo.ts passes on as
 * the reason Gloo is unavailable); DALLE_COLLECTIVE=1 makes a missing Gloo an error; binding.gyp runs it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..', '..');
const buildJs = path.join(root, 'native', 'collective', 'build.js');

function build(out: string, env: Record<string, string>): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, [buildJs, '--out', out], { env: { ...process.env, ...env }, encoding: 'utf8' });
}

describe('distributed: building the Gloo addon', () => {
  let out = '';

  beforeEach(() => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-gloo-build-'));
  });

  afterEach(() => {
    fs.rmSync(out, { recursive: true, force: true });
  });

  it('DALLE_COLLECTIVE=0 skips it with a report, and the loader gives that report as the reason', () => {
    const r = build(out, { DALLE_COLLECTIVE: '0' });
    assert.equal(r.status, 0, String(r.stderr));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'dalle_collective.json'), 'utf8')), { built: false, reason: 'DALLE_COLLECTIVE=0' });
    assert.equal(fs.existsSync(path.join(out, 'dalle_collective.node')), false);
    const gloo = path.join(root, 'dist', 'src', 'core', 'distributed', 'gloo.js');
    const probe = spawnSync(process.execPath, ['-e', `console.log(JSON.stringify(require(${JSON.stringify(gloo)}).glooStatus()))`], {
      env: { ...process.env, DALLE_COLLECTIVE_ADDON: path.join(out, 'dalle_collective.node') }, encoding: 'utf8',
    });
    const status = JSON.parse(probe.stdout);
    assert.equal(status.available, false);
    assert.equal(status.reason, 'the Gloo addon was not built (DALLE_COLLECTIVE=0)');
  });

  it('without Gloo it skips, naming where it looked; DALLE_COLLECTIVE=1 makes that an error', () => {
    const missing = path.join(out, 'no-gloo-here');
    const skipped = build(out, { DALLE_GLOO_INCLUDE: missing, DALLE_COLLECTIVE: '' });
    assert.equal(skipped.status, 0);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'dalle_collective.json'), 'utf8'));
    assert.equal(report.built, false);
    assert.equal(report.reason, `Gloo's headers (gloo/allreduce.h) not found in ${missing} (install libgloo-dev, or set DALLE_GLOO_INCLUDE and DALLE_GLOO_LIB)`);
    const required = build(out, { DALLE_GLOO_INCLUDE: missing, DALLE_COLLECTIVE: '1' });
    assert.equal(required.status, 1);
    assert.match(String(required.stderr), /DALLE_COLLECTIVE=1 but Gloo's headers \(gloo\/allreduce\.h\) not found/);
  });

  it('binding.gyp builds it as the dalle_collective target, from the inputs build.js lists', () => {
    const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
    assert.match(gyp, /"target_name": "dalle_collective"/);
    assert.match(gyp, /"action": \["node", "native\/collective\/build.js", "--out", "<\(PRODUCT_DIR\)"/);
    const inputs = spawnSync(process.execPath, [buildJs, '--list-inputs'], { encoding: 'utf8' }).stdout.split(' ');
    for (const f of inputs) assert.ok(fs.existsSync(path.join(root, f)), `${f} is listed but missing`);
    const sources = fs.readdirSync(path.join(root, 'native', 'collective')).filter((f) => /\.(cc|h)$/.test(f));
    for (const f of sources) assert.ok(inputs.includes(`native/collective/${f}`), `${f} is not among build.js's inputs`);
  });
});
