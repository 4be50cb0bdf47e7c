// Native random tensors reproduce the TypeScript Philox stream, whatever the thread count.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { Philox, randGumbel, randNormal, randUniform, tidy } from '../../src/core/tensor';

// The ISAs this CPU runs, best first (the AVX-512 fill computes 16 Philox blocks per vector; the others one at a time).
function isas(): ('avx512' | 'avx2' | 'portable')[] {
  const info = native.cpuInfo();
  return (['avx512', 'avx2', 'portable'] as const).filter((isa) => isa === 'portable' || info[isa]);
}

describe('native Philox fills', () => {
  for (const threads of [1, 2]) {
    it(`match the reference stream on ${threads} thread(s) and every ISA, odd sizes and offsets`, () => {
      const before = native.numThreads();
      const isaBefore = native.cpuInfo().isa;
      native.setThreads(threads);
      try {
        for (const isa of isas()) {
          native.setIsa(isa);
          checkAgainstReference(isa);
        }
      } finally {
        native.setIsa(isaBefore);
        native.setThreads(before);
      }
    });
  }

  function checkAgainstReference(isa: string): void {
    tidy(() => {
      // offsets: unaligned to a block, and one whose counters cross from low word 2^32 - 1 into the high word
      for (const [n, offset] of [[1, 1n], [7, 2n], [33, 3n], [129, 4n], [100_003, 0n], [1_000, 4n * 0xffffffffn - 37n]] as const) {
        const rng = new Philox(42n + BigInt(n), offset);
        const ref = rng.clone();
        const u = randUniform(rng, [n]).toArray();
        assert.deepStrictEqual([...u], [...ref.fillUniform(new Float32Array(n))], `uniform n=${n} ${isa}`);
        const z = randNormal(rng, [n]).toArray();
        const zr = ref.fillNormal(new Float32Array(n));
        for (let i = 0; i < n; i++) assert.ok(Math.abs(z[i] - zr[i]) <= 1e-6 * (1 + Math.abs(zr[i])), `normal n=${n} i=${i} ${isa}`);
        const g = randGumbel(rng, [n]).toArray();
        const gr = ref.fillGumbel(new Float32Array(n));
        for (let i = 0; i < n; i++) assert.ok(Math.abs(g[i] - gr[i]) <= 1e-6 * (1 + Math.abs(gr[i])), `gumbel n=${n} i=${i} ${isa}`);
        assert.deepStrictEqual(rng.state(), ref.state(), 'both generators advance by the same words');
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
