// The CUDA backend (src/core/backend/cuda.ts) against the real CUDA addon's exports, without a GPU: the addon
// (build/Release/dalle_cuda.node) loads without one, so its export list is real; a recording double with exactly
// those exports stands in for it, and every call the backend makes (memory functions and kernel adapters, called
// with the CPU kernels' signatures) is checked against what the addon's binding reads at each index
// (native/cuda/addon.cc, test/cuda/addon-bindings.ts): the count, and the kind of each argument. A wrong argument
// order or count in the wiring fails here instead of on a GPU.
import * as assert from 'node:assert';
import { cpuBackend, createCudaBackend, missingKernels } from '../../src/core/backend';
import { CPU_NOT_KERNELS } from '../../src/core/backend/cpu';
import { cudaAddonIfLoaded, CudaAddon, CudaAllocStats } from '../../src/core/cuda';
import { native } from '../../src/core/native';
import '../../src/core/ops';
import { MASK_KIND_CODE } from '../../src/core/ops/sparse-attention';
import { ENGINE_KERNELS } from '../../src/core/runtime';
import { registeredOps, unsupportedOps } from '../../src/core/tensor/op';
import { ArgKind, argumentMismatch, cudaBindings } from './addon-bindings';

type Call = { name: string; args: unknown[] };
type Fn = (...args: unknown[]) => unknown;

const STATS: CudaAllocStats = { bytesInUse: 64, bytesCached: 128, peakBytesInUse: 96, allocs: 5, cacheHits: 2, driverAllocs: 3, driverFrees: 1 };

/** An addon with the real one's exports, each recording its calls; alloc hands out distinct addresses. */
function recordingAddon(real: Record<string, unknown>): { addon: CudaAddon; calls: Call[] } {
  const calls: Call[] = [];
  let next = 1 << 20;
  const results: Record<string, Fn> = {
    alloc: () => (next += 1 << 12),
    malloc: () => (next += 1 << 12),
    allocStats: () => ({ ...STATS }),
    scaleFilter: () => 3,
    sumSquares: () => 12.5,
    sumSquaresBatch: () => 12.5,
    cublasLtStatus: () => null,
  };
  const addon: Record<string, Fn> = {};
  for (const name of Object.keys(real)) {
    if (typeof real[name] !== 'function') continue;
    addon[name] = (...args: unknown[]) => {
      calls.push({ name, args });
      return results[name]?.(...args);
    };
  }
  return { addon: addon as unknown as CudaAddon, calls };
}

describe('CUDA backend wiring against the CUDA addon\'s exports (no GPU needed)', () => {
  const real = cudaAddonIfLoaded() as unknown as Record<string, unknown> | null;
  const bindings = cudaBindings();

  before(function () {
    if (!real) {
      console.log('      (skipped: the CUDA addon is not built or did not load here)');
      this.skip();
    }
  });

  /** The calls made by `run` on a fresh backend, each checked against the binding it reaches. */
  function callsOf(run: (backend: ReturnType<typeof createCudaBackend>) => unknown): { calls: Call[]; result: unknown } {
    const { addon, calls } = recordingAddon(real!);
    const backend = createCudaBackend(addon, 'cuda:0', 0);
    calls.length = 0; // setDevice
    const result = run(backend);
    for (const { name, args } of calls) {
      const kinds = bindings.get(name);
      assert.ok(kinds, `the backend called ${name}, which addon.cc does not bind`);
      assert.strictEqual(args.length, kinds.length, `${name}: ${args.length} arguments, the binding reads ${kinds.length} (${kinds.join(', ')})`);
      kinds.forEach((kind: ArgKind, i) => {
        assert.notStrictEqual(kind, 'unknown', `${name}: addon.cc reads argument ${i} at a computed index; this check cannot follow it`);
        const why = argumentMismatch(kind, args[i]);
        assert.strictEqual(why, null, `${name} argument ${i}: ${why}`);
      });
    }
    return { calls, result };
  }

  it('reads every binding of addon.cc, and addon.cc binds exactly what the built addon exports', () => {
    const exported = Object.keys(real!).filter((n) => typeof real![n] === 'function').sort();
    assert.deepStrictEqual([...bindings.keys()].sort(), exported);
    // Spot checks of the reader: the orders that differ from the main addon's, and a struct of arguments.
    assert.deepStrictEqual(bindings.get('copyOut'), ['typedArray', 'address']);
    assert.deepStrictEqual(bindings.get('copyIn'), ['address', 'typedArray']);
    assert.deepStrictEqual(bindings.get('free'), ['address?', 'integer']);
    assert.deepStrictEqual(bindings.get('memcpy'), ['address', 'address', 'integer']);
    assert.deepStrictEqual(bindings.get('blockSparseAttentionForward')?.slice(0, 5), ['dtype', 'maskKind', 'integer', 'integer', 'integer']);
  });

  it('maps every kernel of its table to an addon export or an adapter, each a CPU kernel name', () => {
    const { addon } = recordingAddon(real!);
    const backend = createCudaBackend(addon, 'cuda:0', 0);
    const table = backend.kernels as Record<string, unknown>;
    const cpu = cpuBackend.kernels as Record<string, unknown>;
    assert.ok(Object.keys(table).length > 0);
    for (const [name, fn] of Object.entries(table)) {
      assert.strictEqual(typeof fn, 'function', `${name} is not a function`);
      assert.strictEqual(typeof cpu[name], 'function', `the CUDA table serves ${name}, which is no CPU kernel`);
    }
    const passedThrough = Object.keys(table).filter((n) => table[n] === (addon as unknown as Record<string, unknown>)[n]);
    for (const name of passedThrough) assert.ok(bindings.has(name), name);
    // Every adapter is exercised below: a new one without a wiring case fails here.
    const adapters = Object.keys(table).filter((n) => !passedThrough.includes(n)).sort();
    assert.deepStrictEqual(adapters, Object.keys(ADAPTER_CALLS).sort());
  });

  it('memory functions: host copies, device copy, fill, strided copy, cast and statistics reach the right bindings', () => {
    const data = new Float32Array(6);
    const { calls, result } = callsOf((b) => {
      const a = b.alloc(24);
      const c = b.alloc(24);
      b.copyIn(a, data);
      b.copyOut(a, data);
      b.memcpy(c, a, 24);
      b.fill(a, 6, 1.5, 'f32');
      b.fill(a, 6, 0, 'f32');
      b.fill(a, 6, -0, 'f32');
      b.fill(a, 6, 0x3c00, 'u16');
      b.stridedCopy(c, a, 4, [2, 3], [3, 1], [1, 2]);
      b.cast(c, 'i32', a, 'f32', 6);
      b.free(a, 24);
      return { a, c, stats: b.allocStats() };
    });
    const { a, c, stats } = result as { a: number; c: number; stats: unknown };
    assert.deepStrictEqual(calls.map((x) => x.name), ['alloc', 'alloc', 'copyIn', 'copyOut', 'memcpy', 'fill', 'memset',
      'fill', 'fill', 'stridedCopy', 'cast', 'free', 'allocStats']);
    assert.deepStrictEqual(calls[3].args, [data, a]);
    assert.deepStrictEqual(calls[4].args, [c, a, 24]);
    assert.deepStrictEqual(calls[6].args, [a, 0, 24]);
    assert.ok(Object.is(calls[7].args[2], -0), '-0 must be filled as -0, not memset to +0');
    assert.deepStrictEqual(calls[8].args, [a, 6, 0x3c00, 'u16']);
    assert.deepStrictEqual(calls[11].args, [a, 24]);
    assert.deepStrictEqual(stats, { bytesInUse: 64, bytesCached: 128, peakBytesInUse: 96, allocs: 5, cacheHits: 2, osAllocs: 3 });
  });

  const A = 4096; // a device address

  // Kernel presence is a property of the build: with the addon built, every kernel that ops or the engine may look up
  // on the CPU backend has a CUDA twin, so no op and no engine kernel is refused on a GPU for want of one.
  // Kernels of fused ops (OpDef.fusionOf: reluConv2d) are the exception: callers run the ops they fuse on a backend
  // without them, so they are optional there.
  it('has a CUDA twin for every kernel the CPU backend exposes to ops or the engine, fused ops\' excepted', () => {
    const { addon } = recordingAddon(real!);
    const backend = createCudaBackend(addon, 'cuda:0', 0);
    const fused = new Set(registeredOps().filter((def) => def.fusionOf).flatMap((def) => def.kernels));
    assert.ok(fused.has('conv2dReluForward'), [...fused].join(' '));
    const kernels = Object.keys(cpuBackend.kernels).filter((n) => typeof cpuBackend.kernels[n] === 'function' && !CPU_NOT_KERNELS.includes(n) && !fused.has(n));
    assert.ok(kernels.includes('attentionForward') && kernels.includes('sumSquaresBatch'), kernels.join(' '));
    assert.deepStrictEqual(missingKernels(backend, kernels), []);
    assert.deepStrictEqual(unsupportedOps(backend), []);
    assert.deepStrictEqual(missingKernels(backend, ENGINE_KERNELS), []);
  });

  // The exclusions above must not hide a kernel: each is a real CPU export, and none is one an op declares or the
  // engine calls.
  it('excludes only CPU exports that no op and no engine path looks up as a kernel', () => {
    const cpu = native as unknown as Record<string, unknown>;
    for (const name of CPU_NOT_KERNELS) assert.strictEqual(typeof cpu[name], 'function', `${name} is no CPU export: a stale entry`);
    const looked = new Set([...registeredOps().flatMap((def) => def.kernels), ...ENGINE_KERNELS]);
    assert.deepStrictEqual(CPU_NOT_KERNELS.filter((n) => looked.has(n)), []);
  });

  // The kernels passed through unchanged (the addon's own export under the CPU name), called with the CPU kernel's
  // signature: each call must be what the addon's binding reads.
  const PASSTHROUGH_CALLS: Record<string, unknown[]> = {
    // q strided as a permuted (B, T, H, D) projection, a mask, causal
    attentionForward: [A, [5 * 3 * 8, 8, 3 * 8], A * 2, [96, 48, 8], A * 3, [96, 48, 8], A * 4, A * 5, A * 6, 2, 3, 5, 6, 8, 8, 0.35, true],
    // no mask, dq not wanted; the decode shape (Tq 1)
    attentionBackward: [A, [24, 8, 8], A * 2, [144, 48, 8], A * 3, [144, 48, 8], null, A * 4, [24, 8, 8], A * 5, null, A * 6, A * 7,
      2, 3, 1, 6, 8, 8, 0.35, false],
    axpy: [100, 0.5, A, A * 2],
    scale: [100, -2, A],
    sumSquares: [100, A],
    sumSquaresBatch: [[A, A * 2, A * 3], [100, 0, 7]],
  };
  for (const [name, args] of Object.entries(PASSTHROUGH_CALLS)) {
    it(`${name}: the addon's kernel takes the CPU kernel's signature`, () => {
      const { calls, result } = callsOf((b) => (b.kernels[name] as Fn)(...args));
      assert.deepStrictEqual(calls.map((c) => c.name), [name]);
      assert.deepStrictEqual(calls[0].args, args);
      if (name.startsWith('sumSquares')) assert.strictEqual(result, 12.5, 'the sum is returned');
    });
  }

  // Each adapter called with its CPU kernel's signature (native/cpu), and what it must send to the addon.
  const ADAPTER_CALLS: Record<string, { args: unknown[]; expect: (calls: Call[]) => void }> = {
    sgemmBatched: {
      args: [3, true, false, 5, 6, 7, 0.5, A, 5, 35, A * 2, 6, 42, 0.25, A * 3, 6, 30],
      expect: (calls) => assert.deepStrictEqual(calls.map((c) => c.args), [
        ['f32', true, false, 5, 6, 7, 0.5, A, 5, 35, A * 2, 6, 42, 0.25, A * 3, 6, 30, 3, false]]),
    },
    gemmBf16: {
      args: [false, true, 5, 6, 7, 1, A, 7, A * 2, 7, 0, A * 3, 6],
      expect: (calls) => {
        assert.deepStrictEqual(calls.map((c) => c.name), ['alloc', 'alloc', 'cast', 'cast', 'gemm', 'free', 'free']);
        assert.deepStrictEqual(calls[2].args.slice(1), ['f32', A, 'bf16', 35]);
        assert.deepStrictEqual(calls[3].args.slice(1), ['f32', A * 2, 'bf16', 42]);
        assert.deepStrictEqual(calls[4].args.slice(1, 7), [false, true, 5, 6, 7, 1]);
      },
    },
    layerNormForward: {
      args: [A, A * 2, A * 3, A * 4, A * 5, A * 6, 10, 32, 1e-5],
      expect: (calls) => assert.deepStrictEqual(calls[0].args, ['f32', A, A * 2, A * 3, A * 4, A * 5, A * 6, 10, 32, 1e-5]),
    },
    layerNormBackward: {
      args: [A, A * 2, A * 3, A * 4, A * 5, null, A * 6, null, 10, 32],
      expect: (calls) => assert.deepStrictEqual(calls[0].args, ['f32', A, A * 2, A * 3, A * 4, A * 5, null, A * 6, null, 10, 32]),
    },
    scaleFilter: {
      args: [100, A, A, 0.5],
      expect: (calls) => assert.deepStrictEqual(calls[0].args, ['f32', 100, A, A, 0.5]),
    },
    sparseAttentionForward: {
      // strided q (heads and positions swapped in memory): one contiguous copy before the kernel.
      args: [A, [2 * 6 * 8, 8, 2 * 8], A * 2, [96, 48, 8], A * 3, [96, 48, 8], A * 4, A * 5, MASK_KIND_CODE.conv, 2, 2, 3, 1, 2, 8, 8, 0.35],
      expect: (calls) => {
        assert.deepStrictEqual(calls.map((c) => c.name), ['alloc', 'stridedCopy', 'blockSparseAttentionForward', 'free']);
        assert.deepStrictEqual(calls[1].args.slice(2), [4, [1, 2, 6, 8], [96, 48, 8, 1], [96, 8, 16, 1]]);
        const [dtype, kind, textLen, gridSide, convKernel] = calls[2].args;
        assert.deepStrictEqual([dtype, kind, textLen, gridSide, convKernel], ['f32', 'conv', 2, 2, 3]);
        assert.deepStrictEqual(calls[2].args.slice(6), [A * 2, A * 3, A * 4, A * 5, 1, 2, 8, 8, 0.35]);
      },
    },
    sparseAttentionBackward: {
      args: [A, [96, 48, 8], A * 2, [96, 48, 8], A * 3, [96, 48, 8], A * 4, [96, 48, 8], A * 5, A * 6, null, A * 7,
        MASK_KIND_CODE.row, 2, 2, 1, 1, 2, 8, 8, 0.35],
      expect: (calls) => {
        const names = calls.map((c) => c.name);
        assert.deepStrictEqual(names.filter((n) => n.startsWith('blockSparseAttention')), ['blockSparseAttentionForward', 'blockSparseAttentionBackward']);
        assert.strictEqual(names.filter((n) => n === 'alloc').length, names.filter((n) => n === 'free').length, 'a workspace leaks');
        const bwd = calls.find((c) => c.name === 'blockSparseAttentionBackward')!.args;
        assert.deepStrictEqual(bwd.slice(0, 5), ['f32', 'row', 2, 2, 1]);
        assert.deepStrictEqual([bwd[5], bwd[6], bwd[7], bwd[9], bwd[10], bwd[11], bwd[13]], [A, A * 2, A * 3, A * 4, A * 5, A * 6, A * 7]);
        assert.ok(typeof bwd[12] === 'number' && bwd[12] > 0, 'dk wanted by nobody still needs a workspace');
      },
    },
  };

  for (const [name, { args, expect }] of Object.entries(ADAPTER_CALLS)) {
    it(`${name}: the adapter sends what the addon's binding reads`, () => {
      const { calls, result } = callsOf((b) => (b.kernels[name] as Fn)(...args));
      assert.ok(calls.length > 0);
      expect(calls);
      if (name === 'scaleFilter') assert.strictEqual(result, 3, 'the count of non-finite values is returned');
    });
  }
});
