// --device and runtime.device take cpu, cuda and cuda:N; anything else is refused before a job starts, saying what is
// accepted: a usage error (exit 2) for the flag, a config error (exit 3) for the config key. Without a GPU here, a
// command that computes refuses cuda:N at start (exit 5) with the reason.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function dalle(args: string[]) {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin', 'run.js'), ...args], { cwd: ROOT, encoding: 'utf8' });
}

/** The resolved config `dalle config --json` prints (its last line). */
function resolvedDevice(args: string[]): string {
  const result = dalle(['config', '--kind', 'dvae', '--json', ...args]);
  assert.equal(result.status, 0, result.stderr);
  const config = JSON.parse(result.stdout.trim().split('\n').pop()!) as { runtime: { device: string } };
  return config.runtime.device;
}

describe('--device cpu | cuda | cuda:N', function () {
  this.timeout(60000);

  it('accepts cpu, cuda and cuda:N from the flag and from --set', () => {
    assert.equal(resolvedDevice([]), 'cpu');
    assert.equal(resolvedDevice(['--device', 'cuda']), 'cuda');
    assert.equal(resolvedDevice(['--device', 'cuda:3']), 'cuda:3');
    assert.equal(resolvedDevice(['--set', 'runtime.device=cuda:1']), 'cuda:1');
  });

  it('refuses another name: exit 2 for the flag, exit 3 for the config key, both saying what is accepted', () => {
    for (const bad of ['gpu', 'cuda:01', 'cuda:-1', 'CUDA']) {
      const result = dalle(['config', '--kind', 'dvae', '--device', bad]);
      assert.equal(result.status, 2, `--device ${bad}: ${result.stderr}`);
      assert.match(result.stderr.replace(/\s+/g, ' '), /expected cpu, cuda or cuda:N/);
    }
    const result = dalle(['config', '--kind', 'dvae', '--set', 'runtime.device=cuda:x']);
    assert.equal(result.status, 3, result.stderr);
    assert.match(result.stderr.replace(/\s+/g, ' '), /runtime\.device: expected cpu, cuda or cuda:N/);
  });

  it('a command that computes refuses a GPU this machine lacks at start, with exit code 5 and the reason', () => {
    const result = dalle(['encode', '--dvae', 'models/default/dvae', '--out', path.join(os.tmpdir(), `dalle-device-${process.pid}`, 'tokens.npy'), '--device', 'cuda:2', 'test']);
    assert.equal(result.status, 5, result.stderr);
    assert.match(result.stderr.replace(/\s+/g, ' '), /runtime\.device is cuda:2: .*use --device cpu/);
  });
});
