// The CUDA attention kernels themselves, run on the CPU: native/cuda/emu/attention_emu.cc compiles the same kernel
// source as nvcc (native/cuda/attention_kernels.cuh) with g++, runs each CUDA thread as an OS thread (__syncthreads
// as a barrier, one block at a time) and compares forward and backward with a dense double-precision reference.
// Catches indexing, tiling, synchronization and online-softmax mistakes without a GPU (not fp16 / bf16 loads,
// nor anything the real hardware adds). Skips where g++ with C++20 <barrier> is missing.
import * as assert from 'node:assert';
import { AttentionEmuCase, attentionCaseName, runEmuJson, useEmuProgram } from './gxx';

describe('CUDA attention kernels, emulated on the CPU', function () {
  this.timeout(600000);
  const exe = useEmuProgram('attention_emu.cc');

  // kind, text, grid, conv kernel, B, H, D, Dv: odd sizes, several tiles, full and partial tiles, the prior's own size.
  const cases: AttentionEmuCase[] = [
    ['row', 5, 7, 1, 2, 2, 40, 24],
    ['row', 7, 20, 1, 1, 2, 64, 64],
    ['row', 0, 5, 1, 1, 1, 16, 16],
    ['column', 3, 9, 1, 1, 2, 64, 64],
    ['column', 5, 16, 1, 2, 1, 64, 48],
    ['conv', 7, 11, 5, 1, 1, 33, 64],
    ['conv', 1, 3, 11, 1, 1, 8, 8],
    ['conv', 3, 17, 7, 1, 1, 64, 64],
    ['conv', 256, 32, 11, 1, 1, 64, 64],
    ['column', 256, 32, 1, 1, 1, 64, 64],
  ];
  cases.forEach((c, n) => {
    it(attentionCaseName(c), () => {
      const { values: r, line } = runEmuJson(exe(), [...c.map(String), String(100 + n)]);
      // Each error is max |got - want| / (1e-5 + 1e-4 |want|) over the outputs: <= 1 passes.
      for (const key of ['o', 'lse', 'dq', 'dk', 'dv']) assert.ok(r[key] <= 1, `${key}: ${r[key]} (${line})`);
    });
  });
});
