// Native random tensors reproduce the TypeScript Philox stream, whatever the thread count.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { Philox, randGumbel, randNormal, randUniform, tidy } from '../../src/core/tensor';

describe('native Philox fills', () => {
  for (const threads of [1, 2]) {
    it(`match the reference stream on ${threads} thread(s), odd sizes and offsets`, () => {
      const before = native.numThreads();
      native.setThreads(threads);
      try {
        tidy(() => {
          for (const n of [1, 7, 33, 129, 100_003]) {
            const rng = new Philox(42n + BigInt(n), BigInt(n % 5));
            const ref = rng.clone();
            const u = randUniform(rng, [n]).toArray();
            assert.deepStrictEqual([...u], [...ref.fillUniform(new Float32Array(n))], `uniform n=${n}`);
            const z = randNormal(rng, [n]).toArray();
            const zr = ref.fillNormal(new Float32Array(n));
            for (let i = 0; i < n; i++) assert.ok(Math.abs(z[i] - zr[i]) <= 1e-6 * (1 + Math.abs(zr[i])), `normal n=${n} i=${i}`);
            const g = randGumbel(rng, [n]).toArray();
            const gr = ref.fillGumbel(new Float32Array(n));
            for (let i = 0; i < n; i++) assert.ok(Math.abs(g[i] - gr[i]) <= 1e-6 * (1 + Math.abs(gr[i])), `gumbel n=${n} i=${i}`);
            assert.deepStrictEqual(rng.state(), ref.state(), 'both generators advance by the same words');
          }
        });
      } finally {
        native.setThreads(before);
      }
    });
  }

  it('gives bit-identical tensors for 1 and 2 threads', () => {
    const before = native.numThreads();
    try {
      const draw = (threads: number) => {
        native.setThreads(threads);
        return tidy(() => [...randNormal(new Philox(9), [50_001]).toArray()]);
      };
      assert.deepStrictEqual(draw(1), draw(2));
    } finally {
      native.setThreads(before);
    }
  });
});
