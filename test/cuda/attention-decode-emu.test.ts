// The KV-cache decode kernel of generation (native/cuda/attention_decode_kernels.cuh: one new query row per sequence
// against the cached keys and values its mask row allows), run on the CPU: native/cuda/emu/attention_decode_emu.cc
// compiles the same kernel source as nvcc with g++ in the emulation dialect and compares each step (first and last
// text positions, first image positions, the last position) with a float64 reference row, for fp32, fp16 and bf16
// caches laid out as the prior's KV cache (more sequences and positions than used, q a permuted view). Every cache
// slot the mask row excludes holds NaN, so a kernel that read a disallowed key would fail. Skips where g++ with C++20
// <barrier> is missing.
import * as assert from 'node:assert';
import { cudaAddonIfLoaded } from '../../src/core/cuda';
import { AttentionEmuCase, attentionCaseName, runEmuJson, useEmuProgram } from './gxx';

describe('CUDA KV-cache decode attention kernel, emulated on the CPU', function () {
  this.timeout(600000);
  const exe = useEmuProgram('attention_decode_emu.cc');

  // kind, text, grid, conv kernel, B, H, D, Dv: odd text lengths, grid sides 4..8, more allowed keys than one chunk
  // of 128 threads (130 text positions), no text, widths below 64.
  const cases: AttentionEmuCase[] = [
    ['row', 5, 7, 1, 2, 2, 64, 64],
    ['row', 0, 4, 1, 1, 1, 16, 16],
    ['column', 3, 8, 1, 1, 3, 64, 48],
    ['column', 131, 6, 1, 1, 2, 64, 64],
    ['conv', 7, 8, 5, 2, 1, 33, 64],
    ['conv', 65, 5, 3, 1, 1, 64, 64],
  ];
  it('is exported by the CUDA addon as attentionDecode, which checks its arguments before touching the device', function () {
    const cuda = cudaAddonIfLoaded();
    if (!cuda) this.skip();
    assert.strictEqual(typeof cuda.attentionDecode, 'function');
    const strides = [64 * 21, 64 * 21, 64];
    // Non-null addresses that are never dereferenced: every check below fails first.
    const call = (position: number, qStrides = [64, 64, 64], D = 64) =>
      () => cuda.attentionDecode('f16', 256, qStrides, 256, strides, 256, strides, 256, 256, 'row', 5, 4, 1, 1, 1,
        position, D, 64, 0.125);
    assert.throws(call(21), /attention decode: position 21 is outside 0\.\.20 \(in attentionDecode\)/);
    assert.throws(call(-1), /position -1 is outside 0\.\.20/);
    assert.throws(call(3, [64, 64]), /argument 2 must hold 3 strides \(batch, head, time\)/);
    assert.throws(call(3, undefined, 65), /head widths D = 65, Dv = 64 must be in 1\.\.64/);
    assert.throws(() => cuda.attentionDecode('f16', 256, [1, 1, 1], 256, strides, 256, strides, 256, 256, 'diagonal' as never, 5,
      4, 1, 1, 1, 3, 64, 64, 0.125), /unknown mask kind 'diagonal'/);
  });

  cases.forEach((c, n) => {
    for (const dtype of ['f32', 'f16', 'bf16']) {
      it(`${dtype} ${attentionCaseName(c)}`, () => {
        const { values: r, line } = runEmuJson(exe(), [...c.map(String), dtype, String(300 + n)]);
        // max |got - want| / (atol + rtol |want|) with the output type's rounding (attention_decode_emu.cc): <= 1.
        for (const key of ['o', 'lse']) assert.ok(r[key] <= 1, `${key}: ${r[key]} (${line})`);
      });
    }
  });
});
