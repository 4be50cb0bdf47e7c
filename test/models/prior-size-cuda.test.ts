// The prior's GPU memory estimate (src/core/models/prior/size-cuda.ts, `dalle config --device cuda`) without a GPU:
// its size classes are the CUDA addon's (device_allocator.h through the built addon's sizeClass), its counting is the
// CPU estimate's (equal where the two allocators' classes agree), and it is within 20% of the peak measured by the real
// CUDA backend (createCudaBackend: its adapters and their workspaces) over a stand-in addon that runs the CPU kernels
// and counts memory in the device's size classes (test/harness/fake-cuda-addon.ts). What only a GPU can tell (the
// driver, cuBLASLt, the context) is compared by bench/cuda-check.sh (summary.json memoryEstimate).
import * as assert from 'node:assert';
import type { PriorArch } from '../../src/core/models/prior';
import { allocatorBytes, priorGenerationMemory, priorTrainingMemory, PriorPrecision } from '../../src/core/models/prior/size';
import {
  CUBLASLT_WORKSPACE_BYTES, deviceAllocatorBytes, priorDeviceGenerationMemory, priorDeviceTrainingMemory,
} from '../../src/core/models/prior/size-cuda';
import { deviceSizeClass, installFakeCudaAddon } from '../harness/fake-cuda-addon';
import { MIB, ODD, WIDE, measurePriorTraining } from '../harness/prior-memory';



function ratioOf(estimate: number, measured: number, what: string): number {
  const ratio = estimate / measured;
  assert.ok(ratio > 0.8 && ratio < 1.2, `${what}: estimate ${(estimate / MIB).toFixed(3)} MiB vs measured peak ${(measured / MIB).toFixed(3)} MiB (ratio ${ratio.toFixed(3)})`);
  return ratio;
}

describe('prior GPU memory estimates (dalle config --device cuda), without a GPU', function () {
  this.timeout(120000);
  const sizes = [0, 1, 511, 512, 513, 4096, 4097, 5000, 65537, 1000000, MIB - 1, MIB, MIB + 1, 5 * MIB + 7, 2 ** 31 - 1, 2 ** 31 + 5, 3 * 2 ** 33 + 1];

  it('deviceAllocatorBytes is the CUDA addon\'s sizeClass (device_allocator.h)', function () {
    const sizeClass = deviceSizeClass();
    if (typeof sizeClass === 'string') this.skip(); // no CUDA addon here: the reason is in deviceSizeClass()
    for (const n of sizes) assert.equal(deviceAllocatorBytes(n), (sizeClass as (b: number) => number)(n), `size ${n}`);
  });

  it('the device classes differ from the CPU\'s below 4 KiB and from 1 MiB on, and agree between', () => {
    assert.equal(deviceAllocatorBytes(100), 512);
    assert.equal(allocatorBytes(100), 128);
    assert.equal(deviceAllocatorBytes(MIB + 1), MIB + MIB / 8);
    assert.equal(allocatorBytes(MIB + 1), 2 * MIB);
    for (const n of [4097, 5000, 65537, 1000000]) assert.equal(deviceAllocatorBytes(n), allocatorBytes(n), `size ${n}`);
  });

  it('counts what the CPU estimate counts: the same bytes where the two allocators\' classes agree', () => {
    // WIDE at an even batch <= 8: every tensor either estimate counts is a multiple of 512 bytes up to 4 KiB or lies
    // between 4 KiB and 1 MiB (C 128: biases of 512 bytes; text embedding and logits rows of 2012 values; B*T*4C*4 <
    // 1 MiB), where the classes agree: the tensor counts must then be equal, the device adding only its workspaces.
    for (const B of [2, 4, 8]) {
      for (const precision of ['fp32', 'fp16', 'bf16'] as const) {
        for (const recompute of [false, true]) {
          const cpu = priorTrainingMemory(WIDE, B, { precision, recompute });
          const gpu = priorDeviceTrainingMemory(WIDE, B, { precision, recompute });
          const what = `B=${B} ${precision}${recompute ? ' recompute' : ''}`;
          assert.equal(gpu.stateBytes, cpu.stateBytes, what);
          assert.equal(gpu.activationBytes, cpu.activationBytes, what);
          assert.equal(gpu.totalBytes, cpu.totalBytes + gpu.workspaceBytes, what);
        }
      }
      const cpu = priorGenerationMemory(WIDE, B);
      const { outsideAllocatorBytes, ...gpu } = priorDeviceGenerationMemory(WIDE, B);
      assert.deepStrictEqual(gpu, cpu);
      assert.equal(outsideAllocatorBytes, CUBLASLT_WORKSPACE_BYTES);
    }
    // ODD (C 60: biases of 240 bytes, 256 on the CPU and 512 on the device): the classes are the device's.
    assert.ok(priorDeviceTrainingMemory(ODD, 4).stateBytes > priorTrainingMemory(ODD, 4).stateBytes);
    assert.ok(priorDeviceGenerationMemory(ODD, 4).weightBytes > priorGenerationMemory(ODD, 4).weightBytes);
  });

  it('the attention workspaces: five (B, H, T, D) and two (B, H, T) f32 buffers, at every precision', () => {
    const rows = 4 * 3 * (7 + 25); // B * H * T of ODD at batch 4
    for (const precision of ['fp32', 'fp16', 'bf16'] as const) {
      for (const recompute of [false, true]) {
        assert.equal(priorDeviceTrainingMemory(ODD, 4, { precision, recompute }).workspaceBytes,
          5 * deviceAllocatorBytes(4 * rows * 20) + 2 * deviceAllocatorBytes(4 * rows));
      }
    }
  });

  describe('against the peak of the CUDA backend over a stand-in addon in the device\'s size classes', () => {
    let fake: ReturnType<typeof installFakeCudaAddon> | undefined;
    before(function () {
      const sizeClass = deviceSizeClass();
      if (typeof sizeClass === 'string') {
        console.log(`      (skipped: ${sizeClass})`);
        this.skip();
      }
      fake = installFakeCudaAddon(sizeClass as (bytes: number) => number);
    });
    after(() => fake?.remove());

    const cases: Array<[string, PriorArch, number, PriorPrecision, boolean]> = [
      ['odd', ODD, 1, 'fp32', false], ['odd', ODD, 8, 'fp32', false], ['odd', ODD, 4, 'fp16', false],
      ['odd', ODD, 8, 'fp32', true], ['wide', WIDE, 4, 'fp32', false], ['wide', WIDE, 4, 'fp16', false],
      ['wide', WIDE, 4, 'bf16', false], ['wide', WIDE, 8, 'fp16', true], ['wide', WIDE, 8, 'bf16', true],
    ];
    for (const [name, arch, B, precision, recompute] of cases) {
      it(`training, ${name}, batch ${B}, ${precision}${recompute ? ', recompute' : ''}: within 20% of the measured device peak`, () => {
        const estimate = priorDeviceTrainingMemory(arch, B, { precision, recompute });
        const measured = measurePriorTraining(fake!.backend, 'cuda:0', arch, B, precision, recompute);
        ratioOf(estimate.totalBytes, measured, `${name} B=${B} ${precision}${recompute ? ' recompute' : ''}`);
      });
    }
  });
});
