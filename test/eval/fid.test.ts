/**
 * FID, KID and the Inception Score on fixed feature vectors: closed forms, invariances, and agreement with a float64
 * NumPy/SciPy computation (scipy.linalg.sqrtm, as pytorch-fid does it) run by /usr/bin/python3.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { featureStats, fid, frechetDistance, matmulSquare, sqrtPsd, symmetricEigen } from '../../src/core/eval/fid';
import { inceptionScore, softmaxRows } from '../../src/core/eval/inception-score';
import { kid } from '../../src/core/eval/kid';

const PYTHON = '/usr/bin/python3';

/** A deterministic uniform [0, 1) stream. */
function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** Standard normals by Box-Muller. */
function normals(count: number, seed: number): Float64Array {
  const u = lcg(seed);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  return out;
}

/** (N, D) correlated features: z (N, D) times a random mixing matrix (D, D), plus a per-dimension offset. */
function features(n: number, dim: number, seed: number, shift: number, scale: number, mixSeed = 7): Float64Array {
  const z = normals(n * dim, seed);
  const mix = normals(dim * dim, mixSeed);
  const out = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += z[i * dim + k] * mix[k * dim + j];
      out[i * dim + j] = (scale * s) / Math.sqrt(dim) + shift * Math.sin(j + 1);
    }
  }
  return out;
}

function relErr(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);
}

describe('eval: FID, KID, Inception Score', () => {
  it('symmetricEigen reconstructs the matrix and sqrtPsd squares back', () => {
    const dim = 7; // odd on purpose
    const x = features(20, dim, 3, 0, 1);
    const { cov } = featureStats(x, 20, dim);
    const { values, vectors } = symmetricEigen(cov, dim);
    for (let i = 1; i < dim; i++) assert.ok(values[i] >= values[i - 1], 'eigenvalues ascending');
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < dim; j++) {
        let s = 0;
        for (let k = 0; k < dim; k++) s += vectors[i * dim + k] * values[k] * vectors[j * dim + k];
        assert.ok(Math.abs(s - cov[i * dim + j]) < 1e-12, `V L V^T [${i},${j}] ${s} vs ${cov[i * dim + j]}`);
      }
    }
    const r = sqrtPsd(cov, dim);
    const rr = matmulSquare(r, r, dim);
    for (let i = 0; i < dim * dim; i++) assert.ok(Math.abs(rr[i] - cov[i]) < 1e-12, `sqrt^2 [${i}]`);
  });

  it('featureStats matches the two-pass definitions (unbiased covariance)', () => {
    const x = [1, 2, 3, 5, 2, 0, 4, 4, 1, 0, 0, 7]; // (4, 3)
    const s = featureStats(x, 4, 3);
    assert.deepEqual(Array.from(s.mean), [10 / 4, 8 / 4, 11 / 4]);
    // cov[0][1] = sum (x0 - 2.5)(x1 - 2) / 3 by hand: (-1.5)(0) + (2.5)(0) + (1.5)(2) + (-2.5)(-2) = 8
    const expected = 8 / 3;
    assert.ok(Math.abs(s.cov[1] - expected) < 1e-15 && s.cov[3] === s.cov[1]);
    assert.throws(() => featureStats([1, 2], 1, 2), /at least 2 vectors/);
    assert.throws(() => featureStats([1, 2, 3], 2, 2), /not 2 vectors of 2/);
  });

  it('FID is the closed form for 1-D Gaussians, 0 for identical sets, symmetric', () => {
    const a = Array.from(normals(500, 11));
    const b = a.map((v) => 3 * v + 2);
    const sa = featureStats(a, 500, 1);
    const sb = featureStats(b, 500, 1);
    // 1-D: (m1 - m2)^2 + (s1 - s2)^2 with s = standard deviation.
    const sd = (s: typeof sa) => Math.sqrt(s.cov[0]);
    const closed = (sa.mean[0] - sb.mean[0]) ** 2 + (sd(sa) - sd(sb)) ** 2;
    assert.ok(relErr(frechetDistance(sa, sb).fid, closed) < 1e-12);
    const x = features(60, 9, 5, 0, 1);
    assert.ok(Math.abs(fid(x, 60, x, 60, 9)) < 1e-9, 'FID(x, x) = 0');
    const y = features(45, 9, 8, 0.5, 1.3);
    assert.ok(relErr(fid(x, 60, y, 45, 9), fid(y, 45, x, 60, 9)) < 1e-10, 'symmetric');
    assert.throws(() => frechetDistance(featureStats(x, 60, 9), featureStats(a, 500, 1)), /9- and 1-dimensional/);
  });

  it('KID is unbiased around 0 for one distribution, positive for two; IS is 1 for one class, C for uniform one-hots', () => {
    const dim = 8;
    const x = features(120, dim, 21, 0, 1);
    const x2 = features(120, dim, 23, 0, 1);
    const same = kid(x, 120, x2, 120, dim, { subsets: 20, subsetSize: 50 });
    const y = features(120, dim, 25, 1, 1);
    const diff = kid(x, 120, y, 120, dim, { subsets: 20, subsetSize: 50 });
    assert.ok(Math.abs(same.kid) < 3 * same.std + 1e-3, `same-distribution KID ${same.kid} +- ${same.std}`);
    assert.ok(diff.kid > 10 * Math.abs(same.kid) && diff.kid > 0, `KID ${diff.kid} vs ${same.kid}`);
    // The per-subset path (no Gram cache) gives the same numbers as the cached one, subset for subset.
    const uncached = kid(x, 120, y, 120, dim, { subsets: 20, subsetSize: 50, gramLimit: 0 });
    assert.ok(relErr(uncached.kid, diff.kid) < 1e-12 && relErr(uncached.std, diff.std) < 1e-9);
    assert.equal(kid(x, 120, y.slice(0, 30 * dim), 30, dim, { subsets: 2 }).subsetSize, 30, 'subset size clamped to the smaller set');

    const classes = 5;
    const oneHot = new Float64Array(10 * classes);
    for (let n = 0; n < 10; n++) oneHot[n * classes + (n % classes)] = 1;
    assert.ok(relErr(inceptionScore(oneHot, 10, classes, 1).score, classes) < 1e-12);
    assert.ok(relErr(inceptionScore(oneHot, 10, classes, 2).score, classes) < 1e-12);
    const constant = softmaxRows(new Float64Array(10 * classes).map((_, i) => i % classes), 10, classes);
    assert.ok(relErr(inceptionScore(constant, 10, classes, 2).score, 1) < 1e-12);
    assert.throws(() => inceptionScore([0.5, 0.6], 1, 2, 1), /sum to 1.1/);
  });

  describe('agreement with NumPy/SciPy (float64)', function () {
    this.timeout(60000);
    before(function () {
      const probe = spawnSync(PYTHON, ['-c', 'import numpy, scipy.linalg'], { encoding: 'utf8' });
      if (probe.status !== 0) {
        console.log(
          `      (${PYTHON} cannot import numpy and scipy: skipping the SciPy comparison; ` +
            `install them with 'apt-get install -y python3-scipy')`,
        );
        this.skip();
      }
    });

    // The reference: pytorch-fid's calculate_frechet_distance (sqrtm of the product, real part), the unbiased MMD^2
    // of torch-fidelity on the whole sets, and the Inception Score of the original code.
    const SCRIPT = String.raw`
import json, sys
import numpy as np
from scipy import linalg
cases = json.load(sys.stdin)
out = []
for c in cases:
    x = np.array(c['x'], dtype=np.float64).reshape(c['nx'], c['d'])
    y = np.array(c['y'], dtype=np.float64).reshape(c['ny'], c['d'])
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    s1 = np.atleast_2d(s1); s2 = np.atleast_2d(s2)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    fid = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    d = c['d']
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m = min(c['nx'], c['ny'])
    a, b = x[:m], y[:m]
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    mmd = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)
    p = np.array(c['p'], dtype=np.float64).reshape(c['np'], c['nc'])
    scores = []
    for part in range(c['splits']):
        q = p[part * c['np'] // c['splits']:(part + 1) * c['np'] // c['splits']]
        py = q.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(q * (np.log(q) - np.log(py)), 1))))
    out.append({'fid': fid, 'kid': float(mmd), 'is': float(np.mean(scores)), 'is_std': float(np.std(scores))})
print(json.dumps(out))
`;

    it('FID, KID (whole sets) and IS agree to 1e-6 relative', () => {
      const cases = [
        { nx: 200, ny: 150, d: 16, shift: 0.7, scale: 1.4 },
        { nx: 300, ny: 257, d: 64, shift: 0.1, scale: 0.9 },
        { nx: 80, ny: 80, d: 3, shift: 2.0, scale: 3.0 },
      ].map((c, i) => {
        const x = features(c.nx, c.d, 100 + i, 0, 1);
        const y = features(c.ny, c.d, 200 + i, c.shift, c.scale, 8);
        const classes = 7;
        const count = 53;
        const logits = normals(count * classes, 300 + i).map((v) => 3 * v);
        const p = softmaxRows(logits, count, classes);
        return { ...c, x: Array.from(x), y: Array.from(y), p: Array.from(p), np: count, nc: classes, splits: 4 };
      });
      const run = spawnSync(PYTHON, ['-c', SCRIPT], { input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 1 << 26 });
      assert.equal(run.status, 0, run.stderr);
      const reference = JSON.parse(run.stdout) as { fid: number; kid: number; is: number; is_std: number }[];
      for (const [i, c] of cases.entries()) {
        const ours = fid(c.x, c.nx, c.y, c.ny, c.d);
        const m = Math.min(c.nx, c.ny);
        // One subset of all m vectors: MMD^2_u does not depend on their order, so the draw does not matter.
        const k = kid(c.x.slice(0, m * c.d), m, c.y.slice(0, m * c.d), m, c.d, { subsets: 1, subsetSize: m });
        const is = inceptionScore(c.p, c.np, c.nc, c.splits);
        const r = reference[i];
        console.log(
          `      case ${i} (D=${c.d}): FID ${ours} vs SciPy ${r.fid} (rel ${relErr(ours, r.fid).toExponential(2)}); ` +
            `KID rel ${relErr(k.kid, r.kid).toExponential(2)}; IS rel ${relErr(is.score, r.is).toExponential(2)}`,
        );
        assert.ok(relErr(ours, r.fid) < 1e-6, `case ${i}: FID ${ours} vs ${r.fid}`);
        assert.ok(relErr(k.kid, r.kid) < 1e-6, `case ${i}: KID ${k.kid} vs ${r.kid}`);
        assert.ok(relErr(is.score, r.is) < 1e-6 && relErr(is.std, r.is_std) < 1e-6, `case ${i}: IS ${is.score} vs ${r.is}`);
      }
    });
  });
});
