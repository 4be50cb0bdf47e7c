// Builds one of the CPU programs of native/cuda/emu (the emulated kernels, the allocator logic) with g++ into a fresh
// temporary folder, for the tests that run them. Returns the executable, or why it could not be built (the tests then
// skip: a machine without g++ or without C++20 <barrier> cannot run them).
import { spawnSync } from 'node:child_process';
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
