// reluThenConv2d: conv2d(relu(x), w, b) fused into one op (reluConv2d) on a backend with its kernels (the CPU), and
// the two ops on one without (as the CUDA backend, which is then not refused for the dVAE's jobs): the same values
// and gradients either way, and on the CPU no ReLU tensor is made. The fused kernels' own accuracy is checked in test/native/conv.test.ts and by the op harness.
import assert from 'node:assert/strict';
import { countOpCalls } from '../../bench/lib/op-calls';
import { Device, cpuBackend } from '../../src/core/backend';
import { conv2d, mul, relu, reluThenConv2d, sum } from '../../src/core/ops';
import { Philox, Tensor, backward, randNormal, registeredOps, tidy } from '../../src/core/tensor';
import { deviceRefusal } from '../../src/core/runtime';
import { unsupportedOps } from '../../src/core/tensor/op';
import { installFakeDevice } from '../harness/fake-device';

/** y and the gradients of sum(y * r) with respect to x, w and b, on `device`. */
function run(fn: typeof reluThenConv2d, device: Device, seed: number): Float32Array[] {
  return tidy(() => {
    const rng = new Philox(seed);
    const [x, w, b, r] = [[2, 5, 9, 7], [4, 5, 3, 3], [4], [2, 4, 9, 7]].map((s) => randNormal(rng, s).to(device));
    for (const t of [x, w, b]) t.requiresGrad = true;
    const y = fn(x, w, b);
    backward(sum(mul(y, r)));
    return [y, x.grad!, w.grad!, b.grad!].map((t) => t.to('cpu').toArray() as Float32Array);
  });
}

describe('reluThenConv2d', () => {
  it('on the CPU runs one reluConv2d op (no relu), with the values of relu then conv2d', () => {
    const calls = countOpCalls(registeredOps(), () => run(reluThenConv2d, 'cpu', 3));
    assert.ok(calls.forward.has('reluConv2d'));
    assert.ok(!calls.forward.has('relu') && !calls.forward.has('conv2d'));
    const fused = run(reluThenConv2d, 'cpu', 3);
    const plain = run((x, w, b) => conv2d(relu(x), w, b), 'cpu', 3);
    fused.forEach((a, i) => assert.deepEqual(Array.from(a), Array.from(plain[i]), `output ${i}`));
  });

  it('on a backend without the fused kernels (as CUDA) runs relu then conv2d', () => {
    const names = Object.keys(cpuBackend.kernels).filter((n) => !n.startsWith('conv2dRelu'));
    const fake = installFakeDevice(names);
    try {
      const calls = countOpCalls(registeredOps(), () => run(reluThenConv2d, 'cuda:0', 4));
      assert.ok(calls.forward.has('relu') && calls.forward.has('conv2d'));
      assert.ok(!calls.forward.has('reluConv2d'));
      assert.deepEqual(fake.undeclared, []);
      // A fused op is never a reason to refuse the device: jobs run the ops it fuses there.
      assert.equal(deviceRefusal(fake.backend, 'train-dvae'), null);
      assert.ok(!unsupportedOps(fake.backend).some((o) => o.op === 'reluConv2d'));
      const onDevice = run(reluThenConv2d, 'cuda:0', 4);
      const onCpu = run(reluThenConv2d, 'cpu', 4);
      onDevice.forEach((a, i) => assert.deepEqual(Array.from(a), Array.from(onCpu[i]), `output ${i}`));
    } finally {
      fake.remove();
    }
  });
});
