// The tensor-core attention kernels (native/cuda/attention_tc_kernels.cuh: mma.sync m16n8k16 on fp16 / bf16 tiles,
// fp32 accumulators, online softmax in fp32), run on the CPU: native/cuda/emu/attention_tc_emu.cc compiles the same
// kernel source as nvcc with g++, in the emulation dialect (native/cuda/emu/dialect.h) where the warp-collective mma
// and shuffles give each lane exactly the registers the PTX ISA says it owns and 16-bit floats are rounded to nearest
// even in software, and compares forward (o, lse) and backward (dq, dk, dv) with a dense float64 reference on the same
// 16-bit inputs, for the row, column and conv masks. Catches fragment-layout, tiling, masking, synchronization and
// online-softmax mistakes without a GPU (not the hardware's own accumulation order, nor timing). Skips where g++ with
// C++20 <barrier> is missing.
import * as assert from 'node:assert';
import { AttentionEmuCase, attentionCaseName, runEmuJson, useEmuProgram } from './gxx';

// Worst |got - want| / rms(want) per output. P and dS are rounded to the input type for their products and the
// outputs are stored in it, so the errors are a few unit roundoffs (f16 2^-11, bf16 2^-8; measured at most 0.006 and
// 0.05); a misplaced fragment element is an error of the order of the values themselves (> 0.5). lse is fp32 from
// exact 16-bit products: absolute.
const TOLERANCE: Record<string, number> = { f16: 0.02, bf16: 0.1 };
const LSE_TOLERANCE = 1e-5;

describe('CUDA tensor-core attention kernels, emulated on the CPU', function () {
  this.timeout(600000);
  const exe = useEmuProgram('attention_tc_emu.cc');

  // kind, text, grid, conv kernel, B, H, D, Dv: odd text lengths, grid sides 4..8, one and several tiles (T > 64:
  // partial tiles off the diagonal, the last tile cut short), full tiles (conv with 65 text positions: the text key
  // tile is full for the second query tile), widths below 64 (zero-padded), several heads and batch entries.
  const cases: AttentionEmuCase[] = [
    ['row', 5, 7, 1, 1, 2, 64, 64],
    ['row', 7, 8, 1, 1, 1, 64, 64],
    ['column', 3, 8, 1, 1, 1, 64, 48],
    ['column', 5, 6, 1, 2, 1, 40, 64],
    ['conv', 7, 8, 5, 1, 1, 64, 64],
    ['conv', 65, 4, 3, 1, 1, 64, 64],
    ['conv', 1, 5, 3, 1, 1, 33, 17],
  ];
  cases.forEach((c, n) => {
    for (const dtype of ['f16', 'bf16']) {
      it(`${dtype} ${attentionCaseName(c)}`, () => {
        const { values: r, line } = runEmuJson(exe(), [...c.map(String), dtype, String(200 + n)]);
        for (const key of ['o', 'dq', 'dk', 'dv']) {
          assert.ok(r[key] <= TOLERANCE[dtype], `${key}: ${r[key]} > ${TOLERANCE[dtype]} (${line})`);
        }
        assert.ok(r.lse <= LSE_TOLERANCE, `lse: ${r.lse} > ${LSE_TOLERANCE} (${line})`);
      });
    }
  });
});
