/**
 * Atomic file and directory writes: a reader sees either the old contents or the complete new ones, never a torn
 * file, even if the process is killed or the machine loses power mid-write (checkpoints, manifests, `latest`).
 *
 * Files: write a temporary sibling `.NAME.tmp-PID-RANDOM` (same directory, so same file system and rename(2) is
 * atomic), fsync it, rename it over the target, then fsync the directory so the rename itself is durable. On any
 * error the temporary file is removed and the target is untouched.
 *
 * Directories: fill `DIR.tmp-XXXXXX` (mkdtemp), fsync every file in it, rename it to DIR, fsync the parent.
 *
 * A write that fails (disk full, read-only folder, ...) throws a named error naming the target (write-errors.ts), never
 * a raw errno about the temporary; its `code` is the errno's.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { TargetExistsError } from './errors';
import { guardWrite, guardWriteSync, writeFailure } from './write-errors';

/** Contents to write: text (UTF-8), bytes, or a list of byte chunks written in order (no concatenated copy). */
export type FileContents = string | Uint8Array | readonly Uint8Array[];

export interface AtomicWriteOptions {
  /** Permission bits of a new file, before the umask (default 0o666, as fs.writeFile). */
  mode?: number;
}

export interface AtomicDirectoryOptions {
  /** Replace an existing target directory (default false: a TargetExistsError is thrown before any work). */
  replace?: boolean;
}

/** Largest single write: fs.writeSync takes at most 2^31 - 1 bytes at a time. */
const MAX_WRITE_CHUNK = 1 << 30;

function toChunks(contents: FileContents): readonly Uint8Array[] {
  if (typeof contents === 'string') return [Buffer.from(contents, 'utf8')];
  if (contents instanceof Uint8Array) return [contents];
  return contents;
}

function randomSuffix(): string {
  return crypto.randomBytes(6).toString('hex');
}

/** The temporary sibling for a target file; the pid tells which process left it behind after a crash. */
export function temporarySiblingPath(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${randomSuffix()}`);
}

/**
 * The names our temporaries take, so that those an interrupted write left behind can be found: a file
 * `.NAME.tmp-PID-RANDOM` (temporarySiblingPath), a directory `NAME.tmp-XXXXXX` (mkdtemp: 6 letters or digits) and a
 * directory set aside while being replaced, `NAME.old-RANDOM` (installDirectorySync).
 */
const TEMPORARY_FILE = /^\..+\.tmp-\d+-[0-9a-f]{12}$/;
const TEMPORARY_DIRECTORY = /^.+\.tmp-[A-Za-z0-9]{6}$/;
const SET_ASIDE_DIRECTORY = /^.+\.old-[0-9a-f]{12}$/;

/**
 * Removes what interrupted atomic writes left directly in `dir` (not in its sub-folders): temporary files, temporary
 * directories (a killed checkpoint write leaves `checkpoints/step-N.tmp-XXXXXX`, as large as a checkpoint) and
 * set-aside directories, recognised by the names above. A live writer's temporaries look the same, so call it only on
 * a folder that no other process writes (its run lock is held). Returns the paths removed; a missing `dir` has none.
 */
export function removeStaleTemporaries(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const removed: string[] = [];
  for (const entry of entries) {
    const ours = entry.isDirectory()
      ? TEMPORARY_DIRECTORY.test(entry.name) || SET_ASIDE_DIRECTORY.test(entry.name)
      : entry.isFile() && TEMPORARY_FILE.test(entry.name);
    if (!ours) continue;
    const stale = path.join(dir, entry.name);
    fs.rmSync(stale, { recursive: true, force: true });
    removed.push(stale);
  }
  return removed;
}

/** fsync a directory so that renames into it survive a crash. Some platforms (Windows) cannot; that is not an error. */
function fsyncDirectorySync(directory: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(directory, 'r');
    fs.fsyncSync(fd);
  } catch {
    // best effort: durability of the rename, not its atomicity, depends on this
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

async function fsyncDirectory(directory: string): Promise<void> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(directory, 'r');
    await handle.sync();
  } catch {
    // best effort, as in fsyncDirectorySync
  } finally {
    await handle?.close();
  }
}

function removeQuietlySync(file: string): void {
  try {
    fs.rmSync(file, { force: true, recursive: true });
  } catch {
    // the original error matters more than a failed clean-up
  }
}

async function removeQuietly(file: string): Promise<void> {
  try {
    await fs.promises.rm(file, { force: true, recursive: true });
  } catch {
    // as in removeQuietlySync
  }
}

function writeAllSync(fd: number, chunk: Uint8Array): void {
  let written = 0;
  while (written < chunk.byteLength) {
    written += fs.writeSync(fd, chunk, written, Math.min(chunk.byteLength - written, MAX_WRITE_CHUNK));
  }
}

/** Write a file atomically (see the module comment). */
export function writeFileAtomicSync(target: string, contents: FileContents, options: AtomicWriteOptions = {}): void {
  const temporary = temporarySiblingPath(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(temporary, 'wx', options.mode ?? 0o666);
    for (const chunk of toChunks(contents)) writeAllSync(fd, chunk);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(temporary, target);
  } catch (err) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // already failing
      }
    }
    removeQuietlySync(temporary);
    throw writeFailure(err, target);
  }
  fsyncDirectorySync(path.dirname(target));
}

/** Write a file atomically (see the module comment). */
export async function writeFileAtomic(
  target: string,
  contents: FileContents,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const temporary = temporarySiblingPath(target);
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(temporary, 'wx', options.mode ?? 0o666);
    for (const chunk of toChunks(contents)) {
      let written = 0;
      while (written < chunk.byteLength) {
        const length = Math.min(chunk.byteLength - written, MAX_WRITE_CHUNK);
        written += (await handle.write(chunk, written, length)).bytesWritten;
      }
    }
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.promises.rename(temporary, target);
  } catch (err) {
    if (handle !== undefined) {
      try {
        await handle.close();
      } catch {
        // already failing
      }
    }
    await removeQuietly(temporary);
    throw writeFailure(err, target);
  }
  await fsyncDirectory(path.dirname(target));
}

/** fsync every regular file and directory under `root` (the directory entries matter as much as the contents). */
function fsyncTreeSync(root: string): void {
  for (const entry of fs.readdirSync(root, { withFileTypes: true })) {
    const child = path.join(root, entry.name);
    if (entry.isDirectory()) {
      fsyncTreeSync(child);
    } else if (entry.isFile()) {
      const fd = fs.openSync(child, 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
  }
  fsyncDirectorySync(root);
}

async function fsyncTree(root: string): Promise<void> {
  for (const entry of await fs.promises.readdir(root, { withFileTypes: true })) {
    const child = path.join(root, entry.name);
    if (entry.isDirectory()) {
      await fsyncTree(child);
    } else if (entry.isFile()) {
      const handle = await fs.promises.open(child, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  }
  await fsyncDirectory(root);
}

function targetExists(target: string): boolean {
  return fs.existsSync(target);
}

/**
 * Move the finished temporary directory into place. With `replace`, an existing target is first moved aside to
 * `DIR.old-RANDOM` and removed afterwards: there is a moment with no DIR, but never a half-written one.
 */
function installDirectorySync(temporary: string, target: string, replace: boolean): void {
  if (!targetExists(target)) {
    fs.renameSync(temporary, target);
    return;
  }
  if (!replace) throw new TargetExistsError(target);
  const old = `${target}.old-${randomSuffix()}`;
  fs.renameSync(target, old);
  try {
    fs.renameSync(temporary, target);
  } catch (err) {
    fs.renameSync(old, target); // put the previous version back
    throw err;
  }
  removeQuietlySync(old);
}

/**
 * An error of `fill`: a failed write into the temporary directory (its errno names a path inside it) becomes the named
 * error of a write of `target`; anything else (a failed read of an input, a bad value) is the caller's, unchanged.
 */
function fillFailure(error: unknown, temporary: string, target: string): unknown {
  const failedPath = (error as NodeJS.ErrnoException | undefined)?.path;
  return typeof failedPath === 'string' && path.resolve(failedPath).startsWith(path.resolve(temporary) + path.sep) ? writeFailure(error, target) : error;
}

/**
 * Create directory `target` atomically: `fill` writes into a temporary sibling directory (its argument), which is
 * renamed to `target` once `fill` returns. If `fill` throws, the temporary directory is removed and `target` is
 * untouched. Parent directories are created as needed. Example: checkpoints/step-N/.
 */
export function writeDirectoryAtomicSync(
  target: string,
  fill: (temporaryDirectory: string) => void,
  options: AtomicDirectoryOptions = {},
): void {
  const replace = options.replace ?? false;
  if (!replace && targetExists(target)) throw new TargetExistsError(target);
  const parent = path.dirname(target);
  const temporary = guardWriteSync(target, () => {
    fs.mkdirSync(parent, { recursive: true });
    return fs.mkdtempSync(`${target}.tmp-`);
  });
  try {
    fill(temporary);
    guardWriteSync(target, () => {
      fsyncTreeSync(temporary);
      installDirectorySync(temporary, target, replace);
    });
  } catch (err) {
    removeQuietlySync(temporary);
    throw fillFailure(err, temporary, target);
  }
  fsyncDirectorySync(parent);
}

/** Async version of writeDirectoryAtomicSync. */
export async function writeDirectoryAtomic(
  target: string,
  fill: (temporaryDirectory: string) => Promise<void> | void,
  options: AtomicDirectoryOptions = {},
): Promise<void> {
  const replace = options.replace ?? false;
  if (!replace && targetExists(target)) throw new TargetExistsError(target);
  const parent = path.dirname(target);
  const temporary = await guardWrite(target, async () => {
    await fs.promises.mkdir(parent, { recursive: true });
    return fs.promises.mkdtemp(`${target}.tmp-`);
  });
  try {
    await fill(temporary);
    await guardWrite(target, async () => {
      await fsyncTree(temporary);
      // the rename steps are quick and must not interleave with other work on the same target
      installDirectorySync(temporary, target, replace);
    });
  } catch (err) {
    await removeQuietly(temporary);
    throw fillFailure(err, temporary, target);
  }
  await fsyncDirectory(parent);
}
