// The CUDA backend's op kernels (fill, stridedCopy, ewUnary / ewBinary and their flat forms, softmax and log-softmax
// forward / backward, sum / max / argmax reductions and max's backward, embedding forward / backward, 2x2 max-pool and
// 2x upsampling, philoxFill, the dense masked attention forward / backward, axpy, scale and the batched sum of
// squares) run on the CPU: native/cuda/emu/ops_emu.cc compiles their device code
// (native/cuda/*_kernels.cuh, the source nvcc compiles) with g++ in the emulation dialect (one OS thread per CUDA
// thread, __syncthreads as a barrier) and compares each with a float64 or exact reference on fresh random inputs, odd
// sizes included. The Philox stream is compared with the CPU kernel (the main addon's philoxFill) value by value.
// Catches indexing, broadcasting, reduction-order and synchronization mistakes without a GPU; not what the hardware
// adds (the launchers and bindings are compiled by nvcc, and run only on a GPU: test/cuda/gpu.test.ts).
import * as assert from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cudaAddonIfLoaded } from '../../src/core/cuda';
import { kernel, native } from '../../src/core/native';
import { runEmuJson, useEmuProgram } from './gxx';

describe('CUDA op kernels, emulated on the CPU', function () {
  this.timeout(600000);
  const exe = useEmuProgram('ops_emu.cc');

  it('are exported by the CUDA addon under the CPU kernels\' names', function () {
    const cuda = cudaAddonIfLoaded() as unknown as Record<string, unknown> | null;
    if (!cuda) this.skip();
    const names = ['fill', 'stridedCopy', 'ewUnary', 'ewUnaryFlat', 'ewBinary', 'ewBinaryFlat', 'softmaxForward',
      'softmaxBackward', 'reduce', 'reduceMaxBackward', 'embeddingForward', 'embeddingBackward', 'maxpool2x2Forward',
      'maxpool2x2Backward', 'upsample2xForward', 'upsample2xBackward', 'philoxFill', 'cast', 'attentionForward',
      'attentionBackward', 'axpy', 'scale', 'sumSquares'];
    for (const name of names) {
      assert.strictEqual(typeof (native as unknown as Record<string, unknown>)[name], 'function', `CPU ${name}`);
      assert.strictEqual(typeof cuda[name], 'function', `CUDA ${name}`);
    }
  });

  for (const seed of [1, 2]) {
    it(`every op within tolerance of its reference (inputs of seed ${seed})`, () => {
      const { values: r, line: out } = runEmuJson(exe(), ['check', String(seed)]);
      const expected = ['fill', 'stridedCopy', 'ewUnary.gelu', 'ewBinary.div', 'ewUnaryFlat.tanh', 'ewBinaryFlat.geluGrad',
        'softmaxForward', 'softmaxBackward', 'logSoftmaxForward', 'logSoftmaxBackward', 'reduce.sum.rows',
        'reduce.sum.cols', 'reduce.max.rows', 'reduce.argmax.cols', 'reduceMaxBackward', 'embedding', 'maxpool2x2',
        'upsample2x', 'axpy+scale', 'sumSquares'];
      // The dense attention (dense_attention_kernels.cuh) against float64: CLIP's causal and full shapes, a mask with an
      // empty row, fewer queries than keys, and the prior's single-query decode step with a mask row.
      for (const shape of ['causal', 'mask', 'maskCausal', 'full', 'decode']) {
        expected.push(`attentionForward.${shape}`, `attentionBackward.dq.${shape}`, `attentionBackward.dkdv.${shape}`);
      }
      for (const key of expected) assert.ok(key in r, `check ${key} did not run: ${out}`);
      // Each value is the worst relative error (<= 1 passes) or, for exact ops, the count of wrong elements (0 passes).
      const failing = Object.entries(r).filter(([, v]) => !(v <= 1));
      assert.deepStrictEqual(failing, [], out);
      const exact = ['fill', 'stridedCopy', 'axpy+scale', 'reduce.max.rows', 'reduce.max.cols', 'reduce.argmax.rows',
        'reduce.argmax.cols', 'reduceMaxBackward', 'embedding', 'maxpool2x2', 'upsample2x'];
      for (const key of exact) assert.strictEqual(r[key], 0, `${key}: ${r[key]} elements differ`);
    });
  }

  const philoxFill = kernel<(
    dst: number, n: number, k0: number, k1: number, offLo: number, offHi: number, kind: string, a: number, b: number,
  ) => void>('philoxFill');

  // The CPU kernel's values for a request (through the portable ISA for Gumbel: libm's logarithm, as the device).
  function cpuPhilox(n: number, k0: number, k1: number, offset: number, kind: string, a: number, b: number): Float32Array {
    const addr = native.alloc(n * 4);
    try {
      philoxFill(addr, n, k0, k1, offset % 2 ** 32, Math.floor(offset / 2 ** 32), kind, a, b);
      const out = new Float32Array(n);
      native.copyOut(addr, out);
      return out;
    } finally {
      native.free(addr, n * 4);
    }
  }

  const requests: Array<[string, number, number, number, number, number, number]> = [
    // kind, n (odd), key0, key1, offset (one past 2^32: the counter's high word), a, b
    ['uniform', 1001, 42, 7, 3, 0, 1],
    ['uniform', 517, 0xdeadbeef, 0x12345678, 2 ** 32 + 5, -2, 3],
    ['normal', 999, 1, 2, 6, 0, 1],
    ['normal', 64, 9, 0, 2 ** 32 - 3, 1.5, 0.25],
    ['gumbel', 777, 123, 456, 11, 0, 0],
  ];
  for (const [kind, n, k0, k1, offset, a, b] of requests) {
    it(`philoxFill ${kind} gives the CPU stream (n ${n}, offset ${offset})`, () => {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-philox-')), 'values.f32');
      execFileSync(exe(), ['philox', String(k0), String(k1), String(offset), String(n), kind, String(a), String(b), file]);
      const buf = fs.readFileSync(file);
      const dev = new Float32Array(buf.buffer, buf.byteOffset, n);
      const previous = native.setIsa('portable');
      let cpu: Float32Array;
      try {
        cpu = cpuPhilox(n, k0, k1, offset, kind, a, b);
      } finally {
        native.setIsa(previous as 'portable' | 'avx2' | 'avx512');
      }
      let differ = 0;
      for (let i = 0; i < n; i++) if (!Object.is(dev[i], cpu[i])) differ++;
      assert.strictEqual(differ, 0, `${differ} of ${n} values differ from the CPU stream (first: ${dev[0]} vs ${cpu[0]})`);
    });
  }
  // The i32 casts (native/cuda/cast_kernels.cuh) against the CPU cast, bit for bit: specials (NaN, infinities, -0),
  // the saturation bounds on both sides, fractions of both signs, and integers beyond f32's exact range.
  it('casts f32 -> i32 and i32 -> f32 as the CPU cast does', () => {
    const floats = Float32Array.from([0, -0, 0.5, -0.5, 1.9999, -1.9999, 7.5, -7.5, NaN, -NaN, Infinity, -Infinity,
      2147483520, 2147483647, 2147483648, -2147483648, -2147483904, 3e9, -3e9, 1e-40, 16777217, 123456.789]);
    const ints = Int32Array.from([0, 1, -1, 16777216, 16777217, 16777219, -16777217, 2147483647, -2147483648, 2147483584,
      33554435, -33554435, 65504, 65520]);
    const words = new Uint32Array(floats.length + ints.length);
    words.set(new Uint32Array(floats.buffer));
    words.set(new Uint32Array(ints.buffer), floats.length);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-cast-'));
    fs.writeFileSync(path.join(dir, 'in'), words);
    execFileSync(exe(), ['cast', path.join(dir, 'in'), path.join(dir, 'i32'), path.join(dir, 'f32')]);
    const read = (file: string): Uint32Array => {
      const buf = fs.readFileSync(path.join(dir, file));
      return new Uint32Array(buf.buffer, buf.byteOffset, words.length);
    };
    const cpu = (dst: 'i32' | 'f32', src: 'i32' | 'f32'): Uint32Array => {
      const [a, b] = [native.alloc(words.byteLength), native.alloc(words.byteLength)];
      try {
        native.copyIn(a, words);
        native.cast(b, dst, a, src, words.length);
        const out = new Uint32Array(words.length);
        native.copyOut(b, out);
        return out;
      } finally {
        native.free(a, words.byteLength);
        native.free(b, words.byteLength);
      }
    };
    assert.deepStrictEqual([...read('i32')], [...cpu('i32', 'f32')], 'f32 -> i32');
    assert.deepStrictEqual([...read('f32')], [...cpu('f32', 'i32')], 'i32 -> f32');
  });
});
