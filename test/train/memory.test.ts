// A training loop's memory stays flat: 500 steps of a small conv model (the dVAE's op mix) with AdamW. After warm-up,
// no tensor storage outlives its step, the allocator takes no new memory from the OS (so no new pages), and resident
// memory grows by less than 5%.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { Conv2d } from '../../src/core/nn';
import { maxPool2x2, mean, relu, square, sub, upsample2x } from '../../src/core/ops';
import { Tensor, backward, keep, liveStorage, tidy, zeroGrad } from '../../src/core/tensor';
import { Philox } from '../../src/core/tensor/rng';
import { AdamW } from '../../src/core/train/adamw';

describe('training memory', () => {
  it('stays flat over 500 steps (storages, OS allocations, resident memory < 5%)', function () {
    this.timeout(120000);
    const rng = new Philox(1234);
    const enc = new Conv2d(3, 16, 3, rng);
    const mid = new Conv2d(16, 16, 3, rng);
    const dec = new Conv2d(16, 3, 1, rng);
    const params = [...enc.namedParameters('enc.'), ...mid.namedParameters('mid.'), ...dec.namedParameters('dec.')];
    const opt = new AdamW([{ params: params.map(([name, tensor]) => ({ name, tensor })) }], {
      lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4,
    });
    const pixels = new Float32Array(4 * 3 * 16 * 16);
    rng.fillUniform(pixels);
    const x = keep(Tensor.from(pixels, [4, 3, 16, 16]));

    const step = (): number =>
      tidy(() => {
        zeroGrad(opt.parameters);
        const h = maxPool2x2(relu(enc.forward(x)));
        const y = dec.forward(upsample2x(relu(mid.forward(h))));
        const loss = mean(square(sub(y, x)));
        backward(loss);
        opt.update();
        return loss.item();
      });

    const first = step();
    for (let i = 1; i < 100; i++) step();
    global.gc?.();
    const warm = { rss: process.memoryUsage().rss, os: native.allocStats().osAllocs, live: liveStorage().count };
    let last = first;
    for (let i = 100; i < 500; i++) last = step();
    global.gc?.();
    const end = { rss: process.memoryUsage().rss, os: native.allocStats().osAllocs, live: liveStorage().count };

    assert.ok(last < first, `the model should learn: loss ${first} -> ${last}`);
    assert.strictEqual(end.live, warm.live, 'tensor storages leaked across steps');
    assert.strictEqual(end.os, warm.os, 'the allocator asked the OS for new memory in steady state');
    const growth = (end.rss - warm.rss) / warm.rss;
    assert.ok(growth < 0.05, `resident memory grew ${(growth * 100).toFixed(1)}% (${warm.rss} -> ${end.rss})`);

    x.dispose();
    opt.dispose();
    for (const [, t] of params) t.dispose();
  });
});
