// Builds one of the CPU programs of native/cuda/emu (the emulated kernels, the allocator logic) with g++ into a fresh
// temporary folder, for the tests that run them. Returns the executable, or why it could not be built (the tests then
// skip: a machine without g++ or without C++20 <barrier> cannot run them).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');

export function buildEmuProgram(source: string, std = 'c++20'): { exe: string } | { reason: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-cuda-emu-'));
  const exe = path.join(dir, path.basename(source, '.cc'));
  const src = path.join(repoRoot, 'native', 'cuda', 'emu', source);
  const r = spawnSync('g++', [`-std=${std}`, '-O1', '-pthread', '-Wno-unknown-pragmas', src, '-o', exe], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    return { reason: `g++ -std=${std} could not build ${source}: ${(r.error?.message ?? r.stderr).trim().split('\n')[0]}` };
  }
  return { exe };
}

/**
 * For a mocha suite: builds `source` in a `before` hook (the suite is skipped, saying why, where it cannot be built)
 * and returns the built program's path for its tests to call (valid once the hook has run).
 */
export function useEmuProgram(source: string, std?: string): () => string {
  let exe = '';
  before(function () {
    const built = buildEmuProgram(source, std);
    if ('reason' in built) {
      console.log(`      (skipped: ${built.reason})`);
      this.skip();
    }
    exe = built.exe;
  });
  return () => exe;
}

/** Runs an emulation program that prints one JSON line of named numbers; returns them and the line (for messages). */
export function runEmuJson(exe: string, args: readonly string[]): { values: Record<string, number>; line: string } {
  const line = execFileSync(exe, [...args], { encoding: 'utf8' }).trim();
  return { values: JSON.parse(line) as Record<string, number>, line };
}

/** An attention program's case: mask kind, text length, grid side, conv kernel, B, H, D, Dv (its first 8 arguments). */
export type AttentionEmuCase = [string, number, number, number, number, number, number, number];

/** "row text 5 grid 7 B 2 H 2 D 40 Dv 24" (the kernel size only for conv masks). */
export function attentionCaseName(c: AttentionEmuCase): string {
  return `${c[0]} text ${c[1]} grid ${c[2]}${c[0] === 'conv' ? ` k ${c[3]}` : ''} B ${c[4]} H ${c[5]} D ${c[6]} Dv ${c[7]}`;
}
