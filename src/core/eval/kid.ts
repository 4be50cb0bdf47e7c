/**
 * Kernel Inception Distance (Bińkowski et al., 2018): the unbiased estimate of the squared maximum mean discrepancy
 * between two feature sets under the cubic polynomial kernel
 *
 *   k(x, y) = (x . y / D + 1)^3
 *
 * averaged over random subsets of equal size m drawn without replacement from each set (torch-fidelity's defaults:
 * 100 subsets of 1000; the subset size is clamped to the smaller set):
 *
 *   MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2
 *
 * Everything is float64. When the three Gram matrices of the whole sets fit in `gramLimit` values they are computed
 * once and the subsets only index them (N^2 D work instead of subsets * m^2 D); otherwise each subset computes its own.
 * Key: N = vectors in a set, D = feature dimension, m = subset size.
 */
import { Philox } from '../tensor/rng';

export interface KidOptions {
  /** Subsets to average over (default 100). */
  readonly subsets?: number;
  /** Vectors drawn from each set per subset (default 1000, clamped to the smaller set). */
  readonly subsetSize?: number;
  /** Seed of the subset draws (default 0). */
  readonly seed?: number;
  /** Largest number of Gram-matrix entries to keep in memory (default 3e7, 240 MB). */
  readonly gramLimit?: number;
}

export interface KidResult {
  /** Mean of MMD^2_u over the subsets. */
  readonly kid: number;
  /** Population standard deviation over the subsets (numpy.std, as torch-fidelity reports it). */
  readonly std: number;
  readonly subsets: number;
  readonly subsetSize: number;
}

/** k(x, y) = (x . y / D + 1)^3 of rows i of `a` and j of `b` ((N, D) row-major). */
function kernel(a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number, dim: number): number {
  let s = 0;
  const ai = i * dim;
  const bj = j * dim;
  for (let d = 0; d < dim; d++) s += a[ai + d] * b[bj + d];
  const t = s / dim + 1;
  return t * t * t;
}

/** (Na, Nb) kernel matrix of all rows of `a` against all rows of `b`; symmetric when a === b. */
function gram(a: ArrayLike<number>, na: number, b: ArrayLike<number>, nb: number, dim: number): Float64Array {
  const out = new Float64Array(na * nb);
  const same = a === b;
  for (let i = 0; i < na; i++) {
    for (let j = same ? i : 0; j < nb; j++) {
      const k = kernel(a, i, b, j, dim);
      out[i * nb + j] = k;
      if (same) out[j * nb + i] = k;
    }
  }
  return out;
}

/** `m` distinct indices of [0, n) in random order (a partial Fisher-Yates shuffle). */
function drawSubset(n: number, m: number, rng: Philox): Int32Array {
  const index = new Int32Array(n);
  for (let i = 0; i < n; i++) index[i] = i;
  const words = rng.fillUint32(new Uint32Array(m));
  for (let i = 0; i < m; i++) {
    const j = i + Math.floor((words[i] / 2 ** 32) * (n - i));
    const t = index[i];
    index[i] = index[j];
    index[j] = t;
  }
  return index.slice(0, m);
}

/** The unbiased MMD^2 of one pair of subsets, with k(i, j) giving the kernel of x_i, x_j / y_i, y_j / x_i, y_j. */
function mmd2(
  m: number,
  kxx: (i: number, j: number) => number,
  kyy: (i: number, j: number) => number,
  kxy: (i: number, j: number) => number,
): number {
  let sxx = 0;
  let syy = 0;
  let sxy = 0;
  for (let i = 0; i < m; i++) {
    for (let j = i + 1; j < m; j++) {
      sxx += kxx(i, j);
      syy += kyy(i, j);
    }
    for (let j = 0; j < m; j++) sxy += kxy(i, j);
  }
  // The off-diagonal sums of a symmetric matrix are twice the upper triangles.
  return (2 * sxx + 2 * syy) / (m * (m - 1)) - (2 * sxy) / (m * m);
}

/** KID of feature sets x (Nx, D) and y (Ny, D). */
export function kid(
  x: ArrayLike<number>,
  nx: number,
  y: ArrayLike<number>,
  ny: number,
  dim: number,
  options: KidOptions = {},
): KidResult {
  if (x.length !== nx * dim || y.length !== ny * dim) {
    throw new RangeError(`dalle: KID features: ${x.length} and ${y.length} values are not ${nx} and ${ny} vectors of ${dim}`);
  }
  const subsets = options.subsets ?? 100;
  const subsetSize = Math.min(options.subsetSize ?? 1000, nx, ny);
  if (!Number.isInteger(subsets) || subsets < 1) throw new RangeError(`dalle: KID needs at least 1 subset, got ${subsets}`);
  if (subsetSize < 2) {
    throw new RangeError(`dalle: KID needs at least 2 vectors in each set, got ${nx} and ${ny}`);
  }
  const rng = new Philox(options.seed ?? 0);
  const limit = options.gramLimit ?? 3e7;
  const cached = nx * nx + ny * ny + nx * ny <= limit;
  const gxx = cached ? gram(x, nx, x, nx, dim) : undefined;
  const gyy = cached ? gram(y, ny, y, ny, dim) : undefined;
  const gxy = cached ? gram(x, nx, y, ny, dim) : undefined;
  const values: number[] = [];
  for (let s = 0; s < subsets; s++) {
    const ix = drawSubset(nx, subsetSize, rng);
    const iy = drawSubset(ny, subsetSize, rng);
    const v =
      gxx && gyy && gxy
        ? mmd2(
            subsetSize,
            (i, j) => gxx[ix[i] * nx + ix[j]],
            (i, j) => gyy[iy[i] * ny + iy[j]],
            (i, j) => gxy[ix[i] * ny + iy[j]],
          )
        : mmd2(
            subsetSize,
            (i, j) => kernel(x, ix[i], x, ix[j], dim),
            (i, j) => kernel(y, iy[i], y, iy[j], dim),
            (i, j) => kernel(x, ix[i], y, iy[j], dim),
          );
    values.push(v);
  }
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length;
  return { kid: mean, std: Math.sqrt(variance), subsets, subsetSize };
}
