// PowerSGD (src/core/distributed/powersgd.ts) on N in-process ranks (lockstep-group.ts) against float64 transcriptions
// of the algorithm: exact for gradients of rank <= r, Gram-Schmidt, error feedback, the mean over ranks, the bytes.
import * as assert from 'node:assert';
import { SingleProcess } from '../../src/core/distributed/collective';
import { PowerSgd, orthonormalizeRows } from '../../src/core/distributed/powersgd';
import { powerSgdTraffic } from '../../src/core/distributed/powersgd-layout';
import { Device, Tensor, keep } from '../../src/core/tensor';
import { installFakeDevice } from '../harness/fake-device';
import { TEST_SEED, makeRandom } from '../harness/random';
import { LockstepGroup } from './lockstep-group';

type Rand = ReturnType<typeof makeRandom>;
type Mat = { rows: number; cols: number; data: Float64Array }; // row-major float64

const mat = (rows: number, cols: number, data = new Float64Array(rows * cols)): Mat => ({ rows, cols, data });
const randomMat = (rand: Rand, rows: number, cols: number): Mat =>
  mat(rows, cols, Float64Array.from({ length: rows * cols }, () => rand.normal()));

function mul64(a: Mat, b: Mat, transA = false, transB = false): Mat {
  const M = transA ? a.cols : a.rows;
  const K = transA ? a.rows : a.cols;
  const N = transB ? b.rows : b.cols;
  const out = mat(M, N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (transA ? a.data[k * a.cols + i] : a.data[i * a.cols + k]) * (transB ? b.data[j * b.cols + k] : b.data[k * b.cols + j]);
      out.data[i * N + j] = s;
    }
  }
  return out;
}

const transpose64 = (a: Mat): Mat => {
  const out = mat(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out.data[j * a.rows + i] = a.data[i * a.cols + j];
  return out;
};
const lin = (terms: Array<[number, Mat]>): Mat => {
  const out = mat(terms[0][1].rows, terms[0][1].cols);
  for (const [c, m] of terms) for (let i = 0; i < out.data.length; i++) out.data[i] += c * m.data[i];
  return out;
};
const mean64 = (ms: Mat[]): Mat => lin(ms.map((m) => [1 / ms.length, m] as [number, Mat]));
const norm64 = (x: ArrayLike<number>): number => Math.sqrt(Array.from(x).reduce((a, v) => a + v * v, 0));
const relErr = (got: ArrayLike<number>, want: ArrayLike<number>): number =>
  norm64(Array.from(want, (w, i) => got[i] - w)) / norm64(want);

/** Modified Gram-Schmidt on the columns of a, in float64 (the reference: QR's Q with a positive diagonal R). */
function orthonormalColumns64(a: Mat): Mat {
  const q = mat(a.rows, a.cols, Float64Array.from(a.data));
  for (let j = 0; j < a.cols; j++) {
    for (let k = 0; k < j; k++) {
      let dot = 0;
      for (let i = 0; i < a.rows; i++) dot += q.data[i * a.cols + k] * q.data[i * a.cols + j];
      for (let i = 0; i < a.rows; i++) q.data[i * a.cols + j] -= dot * q.data[i * a.cols + k];
    }
    let n = 0;
    for (let i = 0; i < a.rows; i++) n += q.data[i * a.cols + j] ** 2;
    n = Math.sqrt(n);
    for (let i = 0; i < a.rows; i++) q.data[i * a.cols + j] = n > 0 ? q.data[i * a.cols + j] / n : 0;
  }
  return q;
}

const asMat = (t: Tensor, rows: number, cols: number): Mat => mat(rows, cols, Float64Array.from(t.toArray()));

/** One rank's model: parameters of `shapes`, named p0, p1, ... */
function makeParams(shapes: number[][], device: Device = 'cpu'): Array<[string, Tensor]> {
  return shapes.map((shape, i) => {
    const t = keep(Tensor.zeros(shape, 'f32', device));
    t.requiresGrad = true;
    return [`p${i}`, t] as [string, Tensor];
  });
}

function setGrad(p: Tensor, values: ArrayLike<number>): void {
  const g = Tensor.from(Float32Array.from(values), p.shape, 'f32', p.device);
  p.grad?.dispose();
  p.grad = keep(g);
}

/** N ranks, each with its own parameters and compressor (one seed), stepped together. */
class Ranks {
  readonly group: LockstepGroup;
  readonly params: Array<Array<[string, Tensor]>>;
  readonly compressors: PowerSgd[];

  constructor(readonly n: number, shapes: number[][], rank: number, seed = 1234, minCompressionRatio?: number) {
    this.group = new LockstepGroup(n);
    this.params = Array.from({ length: n }, () => makeParams(shapes));
    this.compressors = this.params.map((ps, k) => new PowerSgd(ps, { rank, collective: this.group.ranks[k], seed, minCompressionRatio }));
  }

  /** grads[k][i]: rank k's gradient of parameter i (row-major). */
  async step(grads: Array<Array<ArrayLike<number>>>) {
    this.params.forEach((ps, k) => ps.forEach(([, p], i) => setGrad(p, grads[k][i])));
    return Promise.all(this.compressors.map((c) => c.reduce()));
  }

  grad(k: number, i: number): Float32Array {
    return this.params[k][i][1].grad!.toArray() as Float32Array;
  }

  dispose(): void {
    for (const c of this.compressors) c.dispose();
    for (const ps of this.params) for (const [, p] of ps) p.dispose();
  }
}

/** (rows x k) with orthonormal columns scaled by 1 .. 2: a well-conditioned factor (f32 can be exact to ~1e-6). */
function wellConditioned(rand: Rand, rows: number, k: number): Mat {
  const q = orthonormalColumns64(randomMat(rand, rows, k));
  for (let i = 0; i < q.data.length; i++) q.data[i] *= 1 + (i % k) / k;
  return q;
}

/** u V^T for a fresh well-conditioned V (cols x k): a matrix of rank k in the column space of u. */
const lowRank = (rand: Rand, u: Mat, cols: number): Mat => mul64(u, wellConditioned(rand, cols, u.cols), false, true);

describe('PowerSGD', () => {
  const seedNote = `(DALLE_TEST_SEED=${TEST_SEED})`;

  it('orthonormalizes rows like float64 Gram-Schmidt, on random odd-sized batches', () => {
    const rand = makeRandom(TEST_SEED + 1);
    for (const [B, k, n] of [[1, 1, 7], [1, 3, 17], [3, 5, 37], [2, 7, 9]]) {
      const data = Float32Array.from({ length: B * k * n }, () => rand.normal());
      const input = Tensor.from(data, [B, k, n]);
      const out = orthonormalizeRows(input);
      const got = out.toArray();
      for (let b = 0; b < B; b++) {
        // Rows of the input are columns of P: the reference works on P (n x k).
        const rowsOfB = mat(k, n, Float64Array.from(data.subarray(b * k * n, (b + 1) * k * n)));
        const want = orthonormalColumns64(transpose64(rowsOfB));
        for (let r = 0; r < k; r++) {
          for (let i = 0; i < n; i++) {
            const diff = Math.abs(got[b * k * n + r * n + i] - want.data[i * k + r]);
            assert.ok(diff < 1e-5, `B ${B} k ${k} n ${n}: row ${r}[${i}] off by ${diff} ${seedNote}`);
          }
        }
      }
      input.dispose();
      out.dispose();
    }
  });

  it('leaves a zero row zero and makes a dependent row orthogonal to the others (the second pass)', () => {
    const rand = makeRandom(TEST_SEED + 2);
    const n = 41;
    const a = Array.from({ length: n }, () => rand.normal());
    const b = Array.from({ length: n }, () => rand.normal());
    const dependent = a.map((v, i) => 0.3 * v - 2 * b[i]); // in the span of rows 0 and 1, up to f32 rounding
    const input = Tensor.from([...a, ...b, ...new Array(n).fill(0), ...dependent], [4, n]);
    const out = orthonormalizeRows(input).toArray();
    const row = (r: number) => Array.from(out.subarray(r * n, (r + 1) * n));
    const dot = (x: number[], y: number[]) => x.reduce((s, v, i) => s + v * y[i], 0);
    assert.ok(row(2).every((v) => v === 0), 'a zero row stays zero (not NaN)');
    for (const r of [0, 1, 3]) {
      const len = Math.sqrt(dot(row(r), row(r)));
      assert.ok(Math.abs(len - 1) < 1e-5, `row ${r} has norm ${len} ${seedNote}`);
      for (const s of [0, 1, 3]) if (s < r) assert.ok(Math.abs(dot(row(r), row(s))) < 1e-5, `rows ${s}, ${r}: ${dot(row(r), row(s))} ${seedNote}`);
    }
  });

  for (const deficit of [0, 1]) {
    it(`reproduces a gradient of rank r - ${deficit} (the same on 3 ranks) to 1e-5, from the first update on`, async () => {
      const rand = makeRandom(TEST_SEED + 3 + deficit);
      const r = 3;
      const shapes = [[13, 9], [9], [6, 2, 5]];
      const ranks = new Ranks(3, shapes, r);
      assert.deepStrictEqual(ranks.compressors[0].compressedNames, ['p0', 'p2']);
      const g = [lowRank(rand, wellConditioned(rand, 13, r - deficit), 9).data, Float64Array.from({ length: 9 }, () => rand.normal()),
        lowRank(rand, wellConditioned(rand, 6, r - deficit), 10).data];
      try {
        for (let step = 0; step < 4; step++) {
          await ranks.step([g, g, g]);
          for (let i = 0; i < shapes.length; i++) {
            const got = ranks.grad(0, i);
            assert.ok(relErr(got, g[i]) < 1e-5, `update ${step}, p${i}: relative error ${relErr(got, g[i])} ${seedNote}`);
            for (const k of [1, 2]) assert.deepStrictEqual(ranks.grad(k, i), got, 'every rank applies the same gradient');
          }
        }
      } finally {
        ranks.dispose();
      }
    });
  }

  it('reproduces the mean of 3 ranks\' different gradients when it has rank <= r', async () => {
    const rand = makeRandom(TEST_SEED + 14);
    const r = 3;
    const shapes = [[13, 9], [6, 2, 5]];
    const ranks = new Ranks(3, shapes, r);
    // Rank k's gradient of a matrix: a well-conditioned mean of rank r plus a deviation in its column space (the
    // deviations sum to zero), so the ranks differ and their mean is the well-conditioned matrix.
    const matrices = [[13, 9], [6, 10]]; // the shapes' matrix views
    const bases = matrices.map(([n]) => wellConditioned(rand, n, r));
    const means = bases.map((u, i) => lowRank(rand, u, matrices[i][1]));
    const deviations = bases.map((u, i) => {
      const d = [0, 1].map(() => mul64(u, randomMat(rand, matrices[i][1], r), false, true));
      return [...d, lin([[-1, d[0]], [-1, d[1]]])];
    });
    const grads = [0, 1, 2].map((k) => means.map((g, i) => lin([[1, g], [1, deviations[i][k]]]).data));
    const want = shapes.map((_, i) => grads[0][i].map((__, j) => (grads[0][i][j] + grads[1][i][j] + grads[2][i][j]) / 3));
    try {
      for (let step = 0; step < 4; step++) {
        await ranks.step(grads);
        // After the first update each rank's error holds its gradient's deviation from the mean, t times over (it
        // cancels in the mean): the f32 sums round that much more, hence the looser bound.
        const bound = step === 0 ? 1e-5 : 1e-4;
        for (let i = 0; i < shapes.length; i++) {
          const err = relErr(ranks.grad(0, i), want[i]);
          assert.ok(err < bound, `update ${step}, p${i}: relative error ${err} ${seedNote}`);
        }
      }
    } finally {
      ranks.dispose();
    }
  });

  it('averages the ranks\' compressed contributions as float64 does (P, orthonormalization, Q, errors)', async () => {
    const rand = makeRandom(TEST_SEED + 5);
    const [n, m, r, N] = [11, 8, 2, 3];
    const ranks = new Ranks(N, [[n, m]], r);
    const fresh = () => [0, 1, 2].map(() => [randomMat(rand, n, m).data]);
    try {
      for (let warm = 0; warm < 3; warm++) await ranks.step(fresh()); // non-zero errors, a warm-started Q
      const q = asMat(ranks.compressors[0].stateTensors().get('p0.powersgd_q')!, m, r);
      const errors = ranks.compressors.map((c) => asMat(c.stateTensors().get('p0.powersgd_error')!, n, m));
      const grads = fresh();
      const M = grads.map((g, k) => lin([[1, mat(n, m, Float64Array.from(Float32Array.from(g[0])))], [1, errors[k]]]));
      const pHat = orthonormalColumns64(mean64(M.map((Mk) => mul64(Mk, q))));
      const contributions = M.map((Mk) => mul64(pHat, mul64(Mk, pHat, true), false, true)); // P (M_k^T P)^T
      const want = mean64(contributions);
      await ranks.step(grads);
      for (let k = 0; k < N; k++) {
        assert.ok(relErr(ranks.grad(k, 0), want.data) < 1e-4, `rank ${k}: ${relErr(ranks.grad(k, 0), want.data)} ${seedNote}`);
        const error = ranks.compressors[k].stateTensors().get('p0.powersgd_error')!.toArray();
        const wantError = lin([[1, M[k]], [-1, want]]).data;
        assert.ok(relErr(error, wantError) < 1e-4, `rank ${k}'s error: ${relErr(error, wantError)} ${seedNote}`);
      }
      const qs = ranks.compressors.map((c) => c.stateTensors().get('p0.powersgd_q')!.toArray());
      assert.deepStrictEqual(qs[1], qs[0], 'the warm start is the same on every rank');
      assert.deepStrictEqual(qs[2], qs[0]);
    } finally {
      ranks.dispose();
    }
  });

  it('feeds the error back: with fixed gradients the mean applied gradient converges to their mean', async () => {
    const rand = makeRandom(TEST_SEED + 6);
    const [n, m, r, N, T] = [10, 7, 1, 2, 300];
    const ranks = new Ranks(N, [[n, m]], r);
    // Each rank its own fixed G_k. The mean of the ranks' errors is what the compression has not yet delivered; each
    // rank's own error also keeps sum_t (G_k - mean G), which grows without bound here and cancels in the mean.
    const grads = [0, 1].map(() => [randomMat(rand, n, m).data]);
    const target = grads[0][0].map((v, j) => (v + grads[1][0][j]) / 2);
    const applied = new Float64Array(n * m);
    const meanErrorNorms: number[] = [];
    const gapAt: number[] = [];
    try {
      for (let t = 1; t <= T; t++) {
        await ranks.step(grads);
        if (t === 1) {
          const first = relErr(ranks.grad(0, 0), target);
          assert.ok(first > 0.1, `rank 1 cannot carry this gradient in one update (${first}): the test would prove nothing`);
        }
        ranks.grad(0, 0).forEach((v, j) => (applied[j] += v));
        const errors = ranks.compressors.map((c) => c.stateTensors().get('p0.powersgd_error')!.toArray());
        meanErrorNorms.push(norm64(errors[0].map((v, j) => (v + errors[1][j]) / 2)));
        gapAt.push(relErr(applied.map((v) => v / t), target));
      }
      // sum_t applied_t = T mean(G) - mean error_T: the gap shrinks like 1/T because the mean error stays bounded.
      const early = Math.max(...meanErrorNorms.slice(0, T / 2));
      const late = Math.max(...meanErrorNorms.slice(T / 2));
      assert.ok(late <= 1.5 * early, `the error grows: max ${early} in the first half, ${late} in the second ${seedNote}`);
      assert.ok(gapAt[T - 1] < 0.05, `mean applied gradient is ${gapAt[T - 1]} away from G after ${T} updates ${seedNote}`);
      assert.ok(gapAt[T - 1] < gapAt[T / 10 - 1] / 3, `the gap does not shrink: ${gapAt[T / 10 - 1]} then ${gapAt[T - 1]}`);
    } finally {
      ranks.dispose();
    }
  });

  it('counts 4 r (n + m) bytes per compressed matrix and 4 bytes per other value, as handed to the collective', async () => {
    const rand = makeRandom(TEST_SEED + 7);
    const shapes = [[6, 5], [5], [7, 3, 2], [3, 2], [2, 40]];
    const r = 2;
    const pays = (s: number[]) => s.length >= 2 && r * (s[0] + s.slice(1).reduce((a, b) => a * b)) < s.reduce((a, b) => a * b);
    const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const expected = shapes.reduce((a, s) => a + 4 * (pays(s) ? r * (s[0] + size(s) / s[0]) : size(s)), 0);
    const uncompressed = 4 * shapes.reduce((a, s) => a + size(s), 0);
    assert.ok(expected < uncompressed && shapes.some((s) => s.length >= 2 && !pays(s)), 'the shapes cover both cases');
    for (const N of [1, 2]) {
      const ranks = new Ranks(N, shapes, r);
      try {
        const before = ranks.group.ranks.map((c) => c.bytesReduced);
        const reports = await ranks.step(ranks.params.map(() => shapes.map((s) => Array.from({ length: size(s) }, () => rand.normal()))));
        for (let k = 0; k < N; k++) {
          assert.strictEqual(reports[k].allreduceBytes, expected);
          assert.strictEqual(reports[k].allreduceBytesUncompressed, uncompressed);
          assert.strictEqual(ranks.group.ranks[k].bytesReduced - before[k], expected, 'bytes the collective was handed');
          assert.strictEqual(reports[k].reset, false);
        }
        assert.strictEqual(ranks.group.completed, 3, 'three all-reduces: the uncompressed bucket, every P, every Q');
        assert.strictEqual(powerSgdTraffic(shapes, r).compressedValues * 4, expected, 'the cost model counts the same');
      } finally {
        ranks.dispose();
      }
    }
  });

  it('all-reduces exactly what does not pay to compress (minCompressionRatio)', async () => {
    const rand = makeRandom(TEST_SEED + 8);
    const shapes = [[6, 5], [5]];
    const ranks = new Ranks(2, shapes, 2, 99, 1000);
    try {
      assert.deepStrictEqual(ranks.compressors[0].compressedNames, []);
      const grads = [0, 1].map(() => shapes.map((s) => Array.from({ length: s.reduce((a, b) => a * b) }, () => rand.normal())));
      const [report] = await ranks.step(grads);
      assert.strictEqual(report.allreduceBytes, report.allreduceBytesUncompressed);
      for (let i = 0; i < shapes.length; i++) {
        const want = Float32Array.from(grads[0][i], (v, j) => (Math.fround(v) + Math.fround(grads[1][i][j])) / 2);
        assert.deepStrictEqual(ranks.grad(0, i), want);
      }
    } finally {
      ranks.dispose();
    }
  });

  it('works in one process (SingleProcess): M_hat = P P^T (G + error), error = G + error - M_hat', async () => {
    const rand = makeRandom(TEST_SEED + 9);
    const [n, m, r] = [9, 12, 2];
    const params = makeParams([[n, m], [m]]);
    const single = new SingleProcess();
    const c = new PowerSgd(params, { rank: r, collective: single, seed: 5 });
    try {
      for (let t = 0; t < 3; t++) {
        const q = asMat(c.stateTensors().get('p0.powersgd_q')!, m, r);
        const error = asMat(c.stateTensors().get('p0.powersgd_error')!, n, m);
        const g = randomMat(rand, n, m);
        const bias = Float32Array.from({ length: m }, () => rand.normal());
        setGrad(params[0][1], g.data);
        setGrad(params[1][1], bias);
        const M = lin([[1, mat(n, m, Float64Array.from(Float32Array.from(g.data)))], [1, error]]);
        const p = orthonormalColumns64(mul64(M, q));
        const want = mul64(p, mul64(p, M, true));
        const report = await c.reduce();
        assert.ok(relErr(params[0][1].grad!.toArray(), want.data) < 1e-4, `update ${t} ${seedNote}`);
        assert.deepStrictEqual(params[1][1].grad!.toArray(), bias, 'a vector passes unchanged');
        assert.strictEqual(report.allreduceBytes, 4 * (r * (n + m) + m));
      }
      assert.strictEqual(single.bytesReduced, 3 * c.bytesPerUpdate);
    } finally {
      c.dispose();
      for (const [, p] of params) p.dispose();
    }
  });

  it('refills a Q column that a zero gradient zeroed, so a later gradient is still carried', async () => {
    const rand = makeRandom(TEST_SEED + 10);
    const ranks = new Ranks(2, [[8, 6]], 2);
    try {
      await ranks.step([[new Float64Array(48)], [new Float64Array(48)]]);
      assert.ok(ranks.grad(0, 0).every((v) => v === 0));
      const u = wellConditioned(rand, 8, 2);
      const grads = [0, 1].map(() => [lowRank(rand, u, 6).data]);
      await ranks.step(grads);
      const want = grads[0][0].map((v, j) => (v + grads[1][0][j]) / 2);
      assert.ok(relErr(ranks.grad(0, 0), want) < 1e-5, `after a zero gradient: ${relErr(ranks.grad(0, 0), want)} ${seedNote}`);
    } finally {
      ranks.dispose();
    }
  });

  it('resets every rank\'s error and warm start after a non-finite gradient on one rank', async () => {
    const rand = makeRandom(TEST_SEED + 11);
    const ranks = new Ranks(2, [[8, 6]], 2);
    try {
      await ranks.step([0, 1].map(() => [randomMat(rand, 8, 6).data]));
      const bad = randomMat(rand, 8, 6).data;
      bad[5] = NaN;
      const reports = await ranks.step([[bad], [randomMat(rand, 8, 6).data]]);
      assert.deepStrictEqual(reports.map((x) => x.reset), [true, true]);
      assert.ok(!ranks.grad(1, 0).every(Number.isFinite), 'the update\'s gradient is not finite: the loop skips it');
      for (const c of ranks.compressors) {
        assert.ok(c.stateTensors().get('p0.powersgd_error')!.toArray().every((v) => v === 0), 'errors reset to zero');
      }
      const u = wellConditioned(rand, 8, 2);
      const grads = [0, 1].map(() => [lowRank(rand, u, 6).data]);
      const after = await ranks.step(grads);
      const want = grads[0][0].map((v, j) => (v + grads[1][0][j]) / 2);
      assert.deepStrictEqual(after.map((x) => x.reset), [false, false]);
      assert.ok(relErr(ranks.grad(0, 0), want) < 1e-5, `after the reset: ${relErr(ranks.grad(0, 0), want)} ${seedNote}`);
    } finally {
      ranks.dispose();
    }
  });

  it('counts a missing gradient as zero on that rank', async () => {
    const rand = makeRandom(TEST_SEED + 12);
    const ranks = new Ranks(2, [[7], [9, 8]], 2);
    try {
      const g0 = Array.from({ length: 7 }, () => rand.normal());
      setGrad(ranks.params[0][0][1], g0);
      setGrad(ranks.params[0][1][1], new Float32Array(72));
      setGrad(ranks.params[1][1][1], new Float32Array(72));
      await Promise.all(ranks.compressors.map((c) => c.reduce())); // rank 1 has no gradient for p0
      assert.deepStrictEqual(ranks.grad(1, 0), Float32Array.from(g0, (v) => Math.fround(v) / 2));
    } finally {
      ranks.dispose();
    }
  });

  it('runs on the parameters\' device with no host transfer but the finiteness check\'s sum', async () => {
    const rand = makeRandom(TEST_SEED + 13);
    const shapes = [[10, 7], [7], [5, 3, 3]];
    const grads = shapes.map((s) => Float32Array.from({ length: s.reduce((a, b) => a * b) }, () => rand.normal()));
    const onCpu = makeParams(shapes);
    grads.forEach((g, i) => setGrad(onCpu[i][1], g));
    const cpu = new PowerSgd(onCpu, { rank: 2, collective: new SingleProcess(), seed: 3 });
    await cpu.reduce();
    const device = installFakeDevice();
    try {
      const onDevice = makeParams(shapes, 'cuda:0');
      grads.forEach((g, i) => setGrad(onDevice[i][1], g));
      const gpu = new PowerSgd(onDevice, { rank: 2, collective: new SingleProcess(), seed: 3 });
      const before = { ...device.copies };
      await gpu.reduce();
      assert.deepStrictEqual(device.copies, before, 'no host <-> device copy during an update');
      assert.deepStrictEqual(device.undeclared, []);
      for (let i = 0; i < shapes.length; i++) {
        assert.deepStrictEqual(onDevice[i][1].grad!.toArray(), onCpu[i][1].grad!.toArray(), `p${i}: the same as on the CPU`);
      }
      gpu.dispose();
      for (const [, p] of onDevice) p.dispose();
    } finally {
      device.remove();
      cpu.dispose();
      for (const [, p] of onCpu) p.dispose();
    }
  });

  it('refuses a bad rank, a parameter listed twice, and reduce() after dispose()', async () => {
    const params = makeParams([[4, 4]]);
    assert.throws(() => new PowerSgd(params, { rank: 0, collective: new SingleProcess(), seed: 1 }), /rank must be an integer >= 1/);
    assert.throws(() => new PowerSgd([...params, ...params], { rank: 1, collective: new SingleProcess(), seed: 1 }), /listed twice/);
    const c = new PowerSgd(params, { rank: 1, collective: new SingleProcess(), seed: 1 });
    c.dispose();
    await assert.rejects(c.reduce(), /after dispose/);
    params[0][1].dispose();
  });
});

