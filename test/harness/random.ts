// Test randomness: fresh inputs every run (seeded from the clock unless DALLE_TEST_SEED is set), and the seed is in
// every failure message so a failing draw can be replayed.
export const TEST_SEED = process.env.DALLE_TEST_SEED ? Number(process.env.DALLE_TEST_SEED) : (Date.now() % 2 ** 31);

/** mulberry32: small, fast, good enough for test inputs (the engine's own RNG is Philox). */
export function makeRandom(seed: number): { uniform(): number; normal(): number; int(lo: number, hi: number): number } {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    uniform,
    normal(): number {
      const u = Math.max(uniform(), 1e-12);
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
    },
    int(lo: number, hi: number): number {
      return lo + Math.floor(uniform() * (hi - lo));
    },
  };
}
