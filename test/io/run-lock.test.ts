/**
 * The advisory folder lock (src/core/io/run-lock.ts): taken and released, refused while a live process on this host
 * or any process on another host holds it, a stale one (its process gone, or its PID reused) taken over with a
 * warning, released when the process exits without releasing it.
 */
import * as assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CoreEvent } from '../../src/core/events';
import { RUN_LOCK_FILE, RunLockError, acquireRunLock, shardLockFile } from '../../src/core/io/run-lock';
import { fabricateLock, makeTempDir } from './helpers';

const RUN_LOCK_MODULE = path.resolve(__dirname, '..', '..', 'src', 'core', 'io', 'run-lock.js');

/** The PID of a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '']);
  assert.equal(child.status, 0);
  return child.pid;
}

function refusal(action: () => unknown): RunLockError {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof RunLockError, String(error));
    return error;
  }
  assert.fail('the lock was not refused');
}

describe('io/run-lock', () => {
  let dir: string;
  let cleanup: () => void;
  let sleeper: ChildProcess | undefined;

  beforeEach(() => ({ dir, cleanup } = makeTempDir('run-lock')));
  afterEach(() => {
    sleeper?.kill('SIGKILL');
    sleeper = undefined;
    cleanup();
  });

  /** A live process on this host, other than this one. */
  async function livePid(): Promise<number> {
    sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    await new Promise((resolve) => sleeper!.once('spawn', resolve));
    return sleeper.pid!;
  }

  it('writes who holds it, refuses a second taker while held, and is gone after release', () => {
    const lock = acquireRunLock(dir, { command: 'dalle train-dvae' });
    const holder = JSON.parse(fs.readFileSync(path.join(dir, RUN_LOCK_FILE), 'utf8'));
    assert.equal(holder.pid, process.pid);
    assert.equal(holder.host, os.hostname());
    assert.equal(holder.command, 'dalle train-dvae');
    assert.ok(Math.abs(Date.parse(holder.started) - Date.now()) < 60_000, holder.started);

    const error = refusal(() => acquireRunLock(dir, { command: 'dalle generate' }));
    assert.match(error.message, new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by dalle train-dvae \\(PID ${process.pid} on host ${os.hostname()}, started ${holder.started}\\)`));
    assert.match(error.hint, /wait for it to finish; if it is surely gone .* delete .*\.dalle\.lock/);

    lock.release();
    lock.release(); // idempotent
    assert.deepEqual(fs.readdirSync(dir), []);
    acquireRunLock(dir).release();
  });

  it('removes the folders it created when they are still empty at release, and keeps folders that were there', () => {
    const deep = path.join(dir, 'runs', 'new', 'run');
    acquireRunLock(deep).release();
    assert.deepEqual(fs.readdirSync(dir), []);

    const written = path.join(dir, 'out');
    const lock = acquireRunLock(written);
    fs.writeFileSync(path.join(written, 'result.txt'), 'x');
    lock.release();
    assert.deepEqual(fs.readdirSync(written), ['result.txt']);

    acquireRunLock(dir).release(); // existed before: stays
    assert.ok(fs.existsSync(dir));
  });

  it('refuses a live process of this host, and any holder on another host, naming it', async () => {
    const pid = await livePid();
    fabricateLock(dir, { pid });
    assert.match(refusal(() => acquireRunLock(dir)).message, new RegExp(`in use by dalle train-dvae \\(PID ${pid} on host ${os.hostname()}, started 2025-01-02T03:04:05.000Z\\)$`));

    fabricateLock(dir, { pid: deadPid(), host: `not-${os.hostname()}` });
    const foreign = refusal(() => acquireRunLock(dir));
    assert.match(foreign.message, new RegExp(`on host not-${os.hostname()}, started .*\\) \\(this is ${os.hostname()}, so whether it still runs cannot be checked from here\\)`));
    assert.ok(fs.existsSync(path.join(dir, RUN_LOCK_FILE)), 'a refused lock is left to its holder');
  });

  it('takes over a stale lock (its process is gone) with a warning naming the holder', () => {
    const pid = deadPid();
    fabricateLock(dir, { pid });
    const events: CoreEvent[] = [];
    const lock = acquireRunLock(dir, { events: { emit: (event) => events.push(event) } });
    assert.equal(JSON.parse(fs.readFileSync(lock.file, 'utf8')).pid, process.pid);
    assert.deepEqual(events.map((e) => e.type === 'log' && e.level), ['warn']);
    assert.match((events[0] as { message: string }).message, new RegExp(`took over the lock of .*: its holder, dalle train-dvae \\(PID ${pid} on host .*\\), is gone \\(no process has PID ${pid}\\)`));
    lock.release();
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('takes over a lock whose PID now belongs to a process started later (Linux /proc)', async function () {
    if (!fs.existsSync(`/proc/${process.pid}/stat`)) this.skip();
    const pid = await livePid();
    fabricateLock(dir, { pid, process_start: '1' });
    const events: CoreEvent[] = [];
    acquireRunLock(dir, { events: { emit: (event) => events.push(event) } }).release();
    assert.match((events[0] as { message: string }).message, new RegExp(`PID ${pid} now belongs to a process started later`));
  });

  it('refuses a lock file that does not name its holder, saying what to do', () => {
    fs.writeFileSync(path.join(dir, RUN_LOCK_FILE), 'garbage');
    const error = refusal(() => acquireRunLock(dir));
    assert.match(error.message, /does not name its holder/);
    assert.match(error.hint, /if no dalle command is writing .*, delete .*\.dalle\.lock/);
  });

  it('gives each shard a lock of its own', () => {
    const first = acquireRunLock(dir, { file: shardLockFile(0, 2) });
    const second = acquireRunLock(dir, { file: shardLockFile(1, 2) });
    refusal(() => acquireRunLock(dir, { file: shardLockFile(0, 2) }));
    first.release();
    second.release();
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('is released when the process exits without releasing it: process.exit, an uncaught error', () => {
    for (const ending of ['process.exit(3)', 'throw new Error("boom")']) {
      const script = `const { acquireRunLock } = require(${JSON.stringify(RUN_LOCK_MODULE)}); acquireRunLock(${JSON.stringify(dir)}); ${ending};`;
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      assert.notEqual(child.status, 0, child.stderr);
      assert.deepEqual(fs.readdirSync(dir), [], ending);
    }
  });
});
