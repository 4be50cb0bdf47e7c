// Devices and backends without a GPU: device names, the op registry's backend axis (mixed devices, missing kernels,
// the op x backend table, the start-up refusal), and a stand-in device (test/harness/fake-device.ts: host memory
// registered as 'cuda:0', kernels forwarding to the CPU's). The stand-in proves the dispatch and the transfer
// boundaries (every op of a real block runs "on the device", and the only host <-> device copies are the explicit
// ones), not the CUDA kernels: those are checked on a GPU by the op harness (test/ops.test.ts) and test/cuda/.
import * as assert from 'node:assert';
import { InvalidDeviceError, parseDevice, sameDevice, cpuBackend } from '../../src/core/backend';
import { formatOpBackendTable, opBackendTable } from '../../src/core/engine-info';
import { Linear, LayerNorm } from '../../src/core/nn';
import { add, gelu, mean, square } from '../../src/core/ops';
import { DeviceUnavailableError, applyRuntime, backendGaps } from '../../src/core/runtime';
import { DeviceMismatchError, Philox, Tensor, UnsupportedOpError, backward, registeredOps, tidy } from '../../src/core/tensor';
import { installFakeDevice } from '../harness/fake-device';

describe('devices and backends', () => {
  it('parses device names: cuda is cuda:0, anything else is refused saying what is accepted', () => {
    assert.strictEqual(parseDevice('cpu'), 'cpu');
    assert.strictEqual(parseDevice('cuda'), 'cuda:0');
    assert.strictEqual(parseDevice('cuda:3'), 'cuda:3');
    assert.ok(sameDevice('cuda', 'cuda:0'));
    assert.ok(!sameDevice('cuda:1', 'cuda:0'));
    for (const bad of ['gpu', 'cuda:', 'cuda:-1', 'cuda:01', 'CUDA', 'cuda:1.5']) {
      assert.throws(() => parseDevice(bad), (e: Error) => e instanceof InvalidDeviceError && /cpu, cuda or cuda:N/.test(e.message), bad);
    }
  });

  it('makes tensors on the device given, and to() moves them with one copy each way', () => {
    const fake = installFakeDevice();
    try {
      const host = Tensor.from([1, 2, 3], [3]);
      assert.strictEqual(host.device, 'cpu');
      const dev = host.to('cuda:0');
      assert.strictEqual(dev.device, 'cuda:0');
      assert.deepStrictEqual(fake.copies, { in: 1, out: 0 });
      assert.strictEqual(Tensor.zeros([2], 'f32', 'cuda:0').device, 'cuda:0');
      assert.deepStrictEqual(Array.from(dev.to('cpu').toArray()), [1, 2, 3]);
      assert.deepStrictEqual(fake.copies, { in: 1, out: 1 });
      tidy(() => assert.strictEqual(square(dev).device, 'cuda:0'));
      for (const t of [host, dev]) t.dispose();
    } finally {
      fake.remove();
    }
  });

  it('refuses an op whose inputs sit on two devices, naming the op and both devices', () => {
    const fake = installFakeDevice();
    try {
      const a = Tensor.from([1, 2], [2]);
      const b = Tensor.from([3, 4], [2], 'f32', 'cuda:0');
      assert.throws(() => add(a, b), (e: Error) =>
        e instanceof DeviceMismatchError && /\badd\b/.test(e.message) && /cpu/.test(e.message) && /cuda:0/.test(e.message));
      a.dispose();
      b.dispose();
    } finally {
      fake.remove();
    }
  });

  it('refuses an op the device has no kernel for, naming the op, the device and the missing kernels', () => {
    const fake = installFakeDevice(['ewUnary', 'ewUnaryFlat', 'ewBinary', 'ewBinaryFlat']);
    try {
      const x = Tensor.from([1, 2, 3, 4], [2, 2], 'f32', 'cuda:0');
      const g = Tensor.ones([2], 'f32', 'cpu').to('cuda:0');
      tidy(() => assert.strictEqual(gelu(x).device, 'cuda:0')); // declared kernels all present: it runs
      assert.throws(() => mean(x), (e: Error) =>
        e instanceof UnsupportedOpError && /'mean'/.test(e.message) && /cuda:0/.test(e.message) && /\breduce\b/.test(e.message));
      for (const t of [x, g]) t.dispose();
    } finally {
      fake.remove();
    }
  });

  it('tabulates ops by backend, and refuses a device at start listing the ops it cannot run', () => {
    const fake = installFakeDevice(['ewUnary', 'ewUnaryFlat', 'ewBinary', 'ewBinaryFlat', 'reduce']);
    try {
      const table = opBackendTable([cpuBackend, fake.backend]);
      assert.deepStrictEqual(table.devices, ['cpu', 'cuda:0']);
      assert.strictEqual(table.rows.length, registeredOps().length);
      for (const row of table.rows) assert.deepStrictEqual(row.missing.cpu, [], `${row.op} on the CPU`);
      const row = (op: string) => table.rows.find((r) => r.op === op)!;
      assert.deepStrictEqual(row('gelu').missing['cuda:0'], []);
      assert.deepStrictEqual(row('add').missing['cuda:0'], []);
      assert.deepStrictEqual(row('matmul').missing['cuda:0'], ['sgemmBatched', 'gemmBf16']);
      assert.deepStrictEqual(row('reshape').missing['cuda:0'], []);
      const lines = formatOpBackendTable(table);
      assert.match(lines.find((l) => l.startsWith('matmul '))!, /yes\s+no \(sgemmBatched, gemmBf16\)/);

      const gaps = backendGaps(fake.backend);
      assert.ok(gaps.ops.some((o) => o.op === 'layerNorm'));
      assert.ok(!gaps.ops.some((o) => o.op === 'gelu'));
      assert.throws(() => applyRuntime({ threads: 1, device: 'cuda' }), (e: Error) =>
        e instanceof DeviceUnavailableError && /runtime\.device is cuda:0/.test(e.message) &&
        /matmul \(sgemmBatched, gemmBf16\)/.test(e.message) && !/\bgelu\b/.test(e.message) && /--device cpu/.test(e.message));
    } finally {
      fake.remove();
    }
    // A complete backend lacks nothing: every op's declared kernels are the CPU's.
    const full = installFakeDevice();
    try {
      assert.deepStrictEqual(backendGaps(full.backend), { ops: [], engine: [] });
    } finally {
      full.remove();
    }
  });

  it('runs a Linear + GELU + LayerNorm block forward and backward on a device: the CPU numbers, and only the explicit copies', () => {
    const makeBlock = () => {
      const rng = new Philox(7);
      return { fc: new Linear(8, 16, rng), norm: new LayerNorm(16), head: new Linear(16, 3, rng) };
    };
    const input = Float32Array.from({ length: 5 * 8 }, (_, i) => Math.sin(i * 0.7) * 2);
    const run = (block: ReturnType<typeof makeBlock>, device: 'cpu' | 'cuda:0') =>
      tidy(() => {
        const hostBatch = Tensor.from(input, [5, 8]);
        const x = device === 'cpu' ? hostBatch : hostBatch.to(device); // batch in
        const y = block.head.forward(block.norm.forward(gelu(block.fc.forward(x))));
        const loss = mean(square(y));
        backward(loss);
        assert.strictEqual(loss.device, device);
        return loss.to('cpu').item(); // result out
      });
    const params = (b: ReturnType<typeof makeBlock>) => [b.fc, b.norm, b.head].flatMap((m) => m.parameters());

    const onCpu = makeBlock();
    const cpuLoss = run(onCpu, 'cpu');
    const fake = installFakeDevice();
    const onDevice = makeBlock();
    try {
      for (const m of [onDevice.fc, onDevice.norm, onDevice.head]) m.to('cuda:0');
      fake.copies.in = 0;
      fake.copies.out = 0;
      const deviceLoss = run(onDevice, 'cuda:0');
      assert.deepStrictEqual(fake.copies, { in: 1, out: 1 }, 'only the batch in and the loss out cross');
      assert.deepStrictEqual(fake.undeclared, [], 'every kernel an op looked up is one it declared');
      assert.strictEqual(deviceLoss, cpuLoss);
      const cpuParams = params(onCpu);
      params(onDevice).forEach((p, i) => {
        assert.strictEqual(p.device, 'cuda:0');
        assert.strictEqual(p.grad!.device, 'cuda:0');
        assert.deepStrictEqual(p.grad!.to('cpu').toArray(), cpuParams[i].grad!.toArray(), `gradient of ${p.name}`);
      });
    } finally {
      for (const b of [onCpu, onDevice]) for (const m of [b.fc, b.norm, b.head]) m.dispose();
      fake.remove();
    }
  });
});
