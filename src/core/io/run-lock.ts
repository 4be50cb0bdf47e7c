/**
 * An advisory lock on a folder that a dalle command writes (a run directory, an output folder), so that two processes
 * never write one folder at once (two `train-dvae --resume` would interleave metrics.jsonl and race on checkpoints;
 * two `generate` would each write every image and record).
 *
 *   DIR/.dalle.lock   {"format": "dalle-lock", "pid", "host", "started", "command", "process_start", "boot_id", "token"}
 *
 * Taking it: the file is created with O_CREAT | O_EXCL (`wx`), so of two processes exactly one succeeds. When it
 * exists, its holder is judged:
 *   - another host: it cannot be checked from here, so the lock is refused (the message says how to clear it);
 *   - this host, and the holder is gone (no process with its PID; or the PID now belongs to a process started at
 *     another time, read from /proc on Linux; or the machine has restarted since, by its boot id): the lock is stale.
 *     It is taken over, with a warning event naming the holder;
 *   - this host and the holder is alive: refused.
 * A refusal is a RunLockError (exit code 4) naming the folder, the holder's PID, host, start time and command.
 *
 * Letting go: `release()` (callers run it in `finally`), and on process exit (an 'exit' listener, which also runs for
 * an uncaught error and for the CLI's signal path, which ends with process.exit). A SIGKILL leaves the lock behind; the
 * next command on this host finds its holder gone and takes it over. Only our own lock file is removed (its token is
 * checked), and folders that taking the lock created are removed again if they are still empty, so a command that
 * fails before writing anything leaves nothing behind.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventSink, silentSink } from '../events';

/** The lock file of a folder written by one command at a time. */
export const RUN_LOCK_FILE = '.dalle.lock';
const FORMAT = 'dalle-lock';
/** A lock file is a few hundred bytes; more is not one of ours. */
const MAX_LOCK_BYTES = 64 * 1024;
/** Takeovers raced by other processes before giving up. */
const ATTEMPTS = 5;

/**
 * The lock file of shard K of N of a job whose shards write one folder on purpose (`dalle generate --shard`): shards
 * exclude a second process running the same shard, not each other.
 */
export function shardLockFile(index: number, count: number): string {
  return `.dalle.shard-${index}-of-${count}.lock`;
}

/** The folder is in use by another process (or its lock cannot be read or made); `hint` says what to do. Exit code 4. */
export class RunLockError extends Error {
  override readonly name = 'RunLockError';

  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

/** Who holds a lock: what the lock file holds. */
export interface LockHolder {
  readonly format: typeof FORMAT;
  readonly pid: number;
  readonly host: string;
  /** When it was taken (ISO 8601). */
  readonly started: string;
  /** What took it ("dalle train-dvae"). */
  readonly command: string;
  /** Linux: the holder's start time in clock ticks since boot (/proc/PID/stat), to tell a reused PID apart. */
  readonly process_start?: string;
  /** Linux: the boot id of the holder's machine, to tell a lock from before a restart. */
  readonly boot_id?: string;
  /** Random: tells this lock apart from a later one in the same file. */
  readonly token: string;
}

export interface RunLockOptions {
  /** The lock file's name in the folder (default RUN_LOCK_FILE; see shardLockFile). */
  readonly file?: string;
  /** What takes it, shown to a process that finds it held ("dalle train-dvae"). */
  readonly command?: string;
  /** Receives the warning when a stale lock is taken over. */
  readonly events?: EventSink;
}

export interface RunLock {
  readonly dir: string;
  /** The lock file. */
  readonly file: string;
  /** Removes the lock file (if it is still ours) and the folders that taking it created, if empty. Idempotent. */
  release(): void;
}

/** Takes the lock of `dir` (created if missing) or throws a RunLockError (see the module comment). */
export function acquireRunLock(dir: string, options: RunLockOptions = {}): RunLock {
  const events = options.events ?? silentSink;
  const file = path.join(dir, options.file ?? RUN_LOCK_FILE);
  let firstCreated: string | undefined;
  try {
    firstCreated = fs.mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw new RunLockError(`cannot create the folder ${dir}: ${errorText(error)}`, 'choose an --out where you can write');
  }
  const holder = newHolder(options.command ?? `dalle (PID ${process.pid})`);
  const contents = `${JSON.stringify(holder, null, 2)}\n`;
  try {
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (tryCreate(file, contents)) return heldLock(dir, file, holder.token, firstCreated);
      const found = readLockFile(file);
      if (found === undefined) continue; // released between our create and our read: try again
      const holderOfFile = parseHolder(found);
      if (holderOfFile === undefined) {
        throw new RunLockError(
          `${dir} is locked by ${file}, which does not name its holder (another process may be taking the lock this very moment, or the file is damaged)`,
          `run again in a moment; if no dalle command is writing ${dir}, delete ${file}`,
        );
      }
      const gone = staleReason(holderOfFile);
      if (gone === undefined) throw inUseError(dir, file, holderOfFile);
      removeStaleLock(file, found);
      events.emit({
        type: 'log',
        level: 'warn',
        message: `took over the lock of ${dir}: its holder, ${describeHolder(holderOfFile)}, is gone (${gone})`,
      });
    }
    throw new RunLockError(`${dir}: its lock ${file} kept changing hands`, 'several processes are starting on this folder at once: run one');
  } catch (error) {
    removeEmptyFolders(dir, firstCreated);
    throw error;
  }
}

function newHolder(command: string): LockHolder {
  const processStart = processStartTicks(process.pid);
  const bootId = readBootId();
  return {
    format: FORMAT,
    pid: process.pid,
    host: os.hostname(),
    started: new Date().toISOString(),
    command,
    ...(processStart !== undefined ? { process_start: processStart } : {}),
    ...(bootId !== undefined ? { boot_id: bootId } : {}),
    token: crypto.randomBytes(8).toString('hex'),
  };
}

/** Creates `file` with `contents` if it does not exist (O_EXCL); false if it does. */
function tryCreate(file: string, contents: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx', 0o644);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new RunLockError(`cannot create the lock file ${file}: ${errorText(error)}`, `check that ${path.dirname(file)} is a folder you can write`);
  }
  try {
    fs.writeSync(fd, contents);
    fs.fsyncSync(fd);
  } catch (error) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw new RunLockError(`cannot write the lock file ${file}: ${errorText(error)}`, `check that ${path.dirname(file)} has free space and is writable`);
  }
  fs.closeSync(fd);
  return true;
}

function heldLock(dir: string, file: string, token: string, firstCreated: string | undefined): RunLock {
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    process.off('exit', release);
    const found = readLockFile(file);
    if (found !== undefined && parseHolder(found)?.token === token) fs.rmSync(file, { force: true });
    removeEmptyFolders(dir, firstCreated);
  };
  process.on('exit', release);
  return { dir, file, release };
}

/** The lock file's text, or undefined when there is none; bounded (a lock file is small). */
function readLockFile(file: string): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new RunLockError(`cannot read the lock file ${file}: ${errorText(error)}`, `check the permissions of ${file}`);
  }
  try {
    const buffer = Buffer.alloc(MAX_LOCK_BYTES + 1);
    const n = fs.readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.toString('utf8', 0, n);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHolder(text: string): LockHolder | undefined {
  if (text.length > MAX_LOCK_BYTES) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const h = value as Partial<LockHolder> | null;
  const ok =
    h !== null && typeof h === 'object' && h.format === FORMAT && Number.isSafeInteger(h.pid) && (h.pid as number) > 0 &&
    typeof h.host === 'string' && typeof h.started === 'string' && typeof h.command === 'string' && typeof h.token === 'string' &&
    (h.process_start === undefined || typeof h.process_start === 'string') && (h.boot_id === undefined || typeof h.boot_id === 'string');
  return ok ? (h as LockHolder) : undefined;
}

/** Why the holder is surely gone, or undefined when it may still run (or runs on another host). */
function staleReason(holder: LockHolder): string | undefined {
  if (holder.host !== os.hostname()) return undefined;
  const bootId = readBootId();
  if (holder.boot_id !== undefined && bootId !== undefined && holder.boot_id !== bootId) return 'this machine has restarted since';
  if (!processExists(holder.pid)) return `no process has PID ${holder.pid}`;
  const start = processStartTicks(holder.pid);
  if (holder.process_start !== undefined && start !== undefined && start !== holder.process_start) {
    return `PID ${holder.pid} now belongs to a process started later`;
  }
  return undefined;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // it exists, it is another user's
  }
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot); undefined where there is no /proc. */
function processStartTicks(pid: number): string | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so the fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = fields[22 - 3];
  return ticks !== undefined && /^\d+$/.test(ticks) ? ticks : undefined;
}

function readBootId(): string | undefined {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Removes a stale lock file whose text was `seen`. It is first renamed aside: if its text then differs, another
 * process took the lock between our read and our rename, so it is put back (link fails if yet another exists).
 */
function removeStaleLock(file: string, seen: string): void {
  const aside = `${file}.stale-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    fs.renameSync(file, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new RunLockError(`cannot remove the stale lock ${file}: ${errorText(error)}`, `delete ${file} (its holder is gone) and run again`);
  }
  if (readLockFile(aside) !== seen) {
    try {
      fs.linkSync(aside, file);
    } catch {
      // a newer lock is in place: that one counts
    }
  }
  fs.rmSync(aside, { force: true });
}

function inUseError(dir: string, file: string, holder: LockHolder): RunLockError {
  const here = os.hostname();
  const where = holder.host === here ? '' : ` (this is ${here}, so whether it still runs cannot be checked from here)`;
  return new RunLockError(
    `${dir} is in use by ${describeHolder(holder)}${where}`,
    `wait for it to finish; if it is surely gone (killed, or its machine restarted), delete ${file} and run again`,
  );
}

function describeHolder(holder: LockHolder): string {
  return `${holder.command} (PID ${holder.pid} on host ${holder.host}, started ${holder.started})`;
}

/** rmdir `dir` and its parents up to `top` (the first folder mkdir created), while they are empty. */
function removeEmptyFolders(dir: string, top: string | undefined): void {
  if (top === undefined) return;
  const stop = path.resolve(top);
  for (let d = path.resolve(dir); d.startsWith(stop); d = path.dirname(d)) {
    try {
      fs.rmdirSync(d);
    } catch {
      return; // not empty (or gone): the rest stays
    }
    if (d === stop) return;
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
