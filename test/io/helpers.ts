/** Shared helpers for the file-format tests. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RUN_LOCK_FILE } from '../../src/core/io/run-lock';

/** A fresh temporary directory, removed by the returned cleanup function. */
export function makeTempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `dalle-${prefix}-`));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A small deterministic PRNG (mulberry32) for fuzz tests, independent of the code under test. */
export function fuzzRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

/** A lock file in `dir` as another process would have written it (src/core/io/run-lock.ts); `holder` overrides fields. */
export function fabricateLock(dir: string, holder: Record<string, unknown>): string {
  const file = path.join(dir, RUN_LOCK_FILE);
  const full = { format: 'dalle-lock', host: os.hostname(), started: '2025-01-02T03:04:05.000Z', command: 'dalle train-dvae', token: 'feedfeedfeedfeed', ...holder };
  fs.writeFileSync(file, JSON.stringify(full));
  return file;
}
