/**
 * Fréchet Inception Distance (Heusel et al., 2017) between two sets of feature vectors, in float64.
 *
 *   FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr( sqrt( sqrt(S1) S2 sqrt(S1) ) )
 *
 * tr(sqrt(S1 S2)) is computed through the symmetric form: S1 S2 is similar to sqrt(S1) S2 sqrt(S1), which is symmetric
 * positive semi-definite, so its square root's trace is the sum of the square roots of its eigenvalues. Two symmetric
 * eigen-decompositions (one of S1 for sqrt(S1), one of M = sqrt(S1) S2 sqrt(S1) for its eigenvalues) replace the
 * general Schur-based sqrtm of S1 S2 that pytorch-fid uses (scipy.linalg.sqrtm): the symmetric solver is stable and never
 * produces complex parts. Eigenvalues below zero (rounding in a singular covariance, when
 * there are fewer images than feature dimensions) are clamped to zero instead of adding pytorch-fid's eps * I.
 *
 * The symmetric eigensolver is ml-matrix's EigenvalueDecomposition (Householder tridiagonalisation + implicit QL, the
 * JAMA / EISPACK tred2 + tql2 pair, in float64): a maintained package with a cache-friendly layout, rather than a
 * hand-written Jacobi solver.
 *
 * Key: N = number of feature vectors, D = feature dimension.
 */
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

/** Mean and covariance of a set of feature vectors, float64. */
export interface FeatureStats {
  /** Number of vectors the statistics were computed from. */
  readonly count: number;
  readonly dim: number;
  /** (D) */
  readonly mean: Float64Array;
  /** (D, D) row-major, unbiased (divides by N - 1, as numpy.cov, which pytorch-fid uses). */
  readonly cov: Float64Array;
}

/**
 * Mean and unbiased covariance of `count` vectors of `dim` values stored row-major in `features` (N, D).
 * The sums run in float64 after subtracting the mean (two passes), so float32 features lose nothing here.
 */
export function featureStats(features: ArrayLike<number>, count: number, dim: number): FeatureStats {
  if (!Number.isInteger(count) || !Number.isInteger(dim) || count < 2 || dim < 1) {
    throw new RangeError(`dalle: feature statistics need at least 2 vectors of at least 1 value, got ${count} x ${dim}`);
  }
  if (features.length !== count * dim) {
    throw new RangeError(`dalle: ${features.length} feature values are not ${count} vectors of ${dim}`);
  }
  const mean = new Float64Array(dim);
  for (let n = 0; n < count; n++) {
    for (let d = 0; d < dim; d++) mean[d] += features[n * dim + d];
  }
  for (let d = 0; d < dim; d++) mean[d] /= count;
  // cov = X_c^T X_c / (N - 1), with X_c (N, D) the centred features; only the upper triangle is accumulated.
  const cov = new Float64Array(dim * dim);
  const row = new Float64Array(dim);
  for (let n = 0; n < count; n++) {
    for (let d = 0; d < dim; d++) row[d] = features[n * dim + d] - mean[d];
    for (let i = 0; i < dim; i++) {
      const ri = row[i];
      if (ri === 0) continue;
      const base = i * dim;
      for (let j = i; j < dim; j++) cov[base + j] += ri * row[j];
    }
  }
  const scale = 1 / (count - 1);
  for (let i = 0; i < dim; i++) {
    for (let j = i; j < dim; j++) {
      const v = cov[i * dim + j] * scale;
      cov[i * dim + j] = v;
      cov[j * dim + i] = v;
    }
  }
  return { count, dim, mean, cov };
}

/** Eigenvalues (ascending) and eigenvectors (columns of `vectors`, (D, D) row-major) of a symmetric matrix. */
export interface SymmetricEigen {
  readonly values: Float64Array;
  readonly vectors: Float64Array;
}

/** Eigen-decomposition of the symmetric (D, D) row-major matrix `a`: a = V diag(values) V^T. */
export function symmetricEigen(a: Float64Array, dim: number): SymmetricEigen {
  if (a.length !== dim * dim) throw new RangeError(`dalle: ${a.length} values are not a ${dim}x${dim} matrix`);
  const evd = new EigenvalueDecomposition(Matrix.from1DArray(dim, dim, a), { assumeSymmetric: true });
  const values = Float64Array.from(evd.realEigenvalues);
  const v = evd.eigenvectorMatrix;
  const vectors = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    const r = v.getRow(i);
    for (let j = 0; j < dim; j++) vectors[i * dim + j] = r[j];
  }
  return { values, vectors };
}

/** The positive semi-definite square root of a symmetric PSD matrix: V diag(sqrt(max(l, 0))) V^T. */
export function sqrtPsd(a: Float64Array, dim: number): Float64Array {
  const { values, vectors } = symmetricEigen(a, dim);
  // B = V diag(sqrt(l)) then out = B V^T.
  const roots = values.map((l) => Math.sqrt(Math.max(l, 0)));
  const scaled = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let k = 0; k < dim; k++) scaled[i * dim + k] = vectors[i * dim + k] * roots[k];
  }
  const out = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let j = i; j < dim; j++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += scaled[i * dim + k] * vectors[j * dim + k];
      out[i * dim + j] = s;
      out[j * dim + i] = s;
    }
  }
  return out;
}

/** (D, D) x (D, D) row-major product in float64 (i-k-j order: the inner loop runs along rows of b and out). */
export function matmulSquare(a: Float64Array, b: Float64Array, dim: number): Float64Array {
  const out = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    const o = i * dim;
    for (let k = 0; k < dim; k++) {
      const aik = a[o + k];
      if (aik === 0) continue;
      const bk = k * dim;
      for (let j = 0; j < dim; j++) out[o + j] += aik * b[bk + j];
    }
  }
  return out;
}

/** tr(sqrt(S1 S2)) for symmetric PSD S1, S2, through sqrt(S1) S2 sqrt(S1) (see the module comment). */
export function traceSqrtProduct(s1: Float64Array, s2: Float64Array, dim: number): number {
  const r1 = sqrtPsd(s1, dim);
  const m = matmulSquare(matmulSquare(r1, s2, dim), r1, dim);
  // Symmetrise: rounding leaves M asymmetric by about 1e-16 relative; the solver reads only one triangle anyway.
  for (let i = 0; i < dim; i++) {
    for (let j = i + 1; j < dim; j++) {
      const v = 0.5 * (m[i * dim + j] + m[j * dim + i]);
      m[i * dim + j] = v;
      m[j * dim + i] = v;
    }
  }
  const { values } = symmetricEigen(m, dim);
  let trace = 0;
  for (const l of values) trace += Math.sqrt(Math.max(l, 0));
  return trace;
}

export interface FidParts {
  readonly fid: number;
  /** |mu1 - mu2|^2 */
  readonly meanTerm: number;
  /** tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)) */
  readonly covTerm: number;
}

/** The Fréchet distance between the Gaussians fitted to two feature sets. */
export function frechetDistance(a: FeatureStats, b: FeatureStats): FidParts {
  if (a.dim !== b.dim) throw new RangeError(`dalle: FID of ${a.dim}- and ${b.dim}-dimensional features`);
  const dim = a.dim;
  let meanTerm = 0;
  for (let d = 0; d < dim; d++) meanTerm += (a.mean[d] - b.mean[d]) ** 2;
  let traces = 0;
  for (let d = 0; d < dim; d++) traces += a.cov[d * dim + d] + b.cov[d * dim + d];
  const covTerm = traces - 2 * traceSqrtProduct(a.cov, b.cov, dim);
  return { fid: meanTerm + covTerm, meanTerm, covTerm };
}

/** FID of two feature matrices (N1, D) and (N2, D). */
export function fid(real: ArrayLike<number>, realCount: number, fake: ArrayLike<number>, fakeCount: number, dim: number): number {
  return frechetDistance(featureStats(real, realCount, dim), featureStats(fake, fakeCount, dim)).fid;
}
