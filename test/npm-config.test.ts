/**
 * The project's npm set-up: npm prints no warning in this project (a key npm does not know, such as the
 * `onnxruntime-node-install=skip` line .npmrc once had, made npm 11 warn on every `npx dalle` and `npm test`), and every
 * dependency with an install script is reviewed in package.json's `allowScripts`: onnxruntime-node's is denied, since it
 * would download CUDA libraries (its CPU runtime, which dalle uses, ships in the package).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

/** Runs npm in the project with the environment of a user's shell: none of the npm_config_* a parent npm exports. */
function npm(args: string[]) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name)));
  return spawnSync('npm', args, { cwd: ROOT, encoding: 'utf8', env, timeout: 60000 });
}

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(path.join(ROOT, file), 'utf8')) as T;
}

describe('npm set-up', function () {
  this.timeout(60000);

  // `npm config list` reads the same config files as every npm command here (`npx dalle`, `npm test`). (`npm exec` of
  // the project's own bin is not run: with a cold npx cache, npm 11 runs the project's install and prepare scripts.)
  it('npm config list prints no npm warning in the project', () => {
    const config = npm(['config', 'list']);
    assert.equal(config.status, 0, config.stderr);
    assert.doesNotMatch(config.stderr, /npm warn/i);
  });

  it("package.json's allowScripts reviews every dependency with an install script, and denies onnxruntime-node's", () => {
    const { allowScripts = {} } = readJson<{ allowScripts?: Record<string, boolean> }>('package.json');
    assert.equal(allowScripts['onnxruntime-node'], false);
    const lock = readJson<{ packages: Record<string, { hasInstallScript?: boolean }> }>('package-lock.json');
    const withScripts = Object.entries(lock.packages)
      .filter(([where, entry]) => where !== '' && entry.hasInstallScript === true)
      .map(([where]) => where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length));
    assert.ok(withScripts.includes('onnxruntime-node'));
    for (const name of withScripts) assert.ok(Object.hasOwn(allowScripts, name), `${name} has an install script: allow or deny it in allowScripts`);
  });

  it('.ci/run tells npm 10, which ignores allowScripts, to skip the onnxruntime-node download', () => {
    assert.match(fs.readFileSync(path.join(ROOT, '.ci', 'run'), 'utf8'), /^export ONNXRUNTIME_NODE_INSTALL=skip$/m);
  });
});
