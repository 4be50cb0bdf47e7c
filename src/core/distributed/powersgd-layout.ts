/**
 * Which gradients PowerSGD compresses and how many bytes an update then all-reduces: plain arithmetic on shapes, shared
 * by the compressor (powersgd.ts) and the cost model (cost-model.ts), which needs no engine.
 *
 * A gradient of shape (d0, d1, ...) is viewed as the matrix M (n x m) = (d0 x d1*d2*...). Rank r factors P (n x r) and
 * Q (m x r) travel instead of M: r(n + m) values instead of n m. A matrix is compressed when that pays:
 * n m > minCompressionRatio * r (n + m) (default ratio 1: any saving); vectors (biases, gains) and matrices too thin
 * for rank r are all-reduced as they are.
 */

/** A gradient viewed as a matrix: rows = the first dimension, cols = the product of the others. */
export interface MatrixView {
  readonly rows: number;
  readonly cols: number;
}

/** The matrix view of a tensor of `shape`, or null for a scalar or a vector (never compressed). */
export function matrixView(shape: readonly number[]): MatrixView | null {
  if (shape.length < 2) return null;
  return { rows: shape[0], cols: shape.slice(1).reduce((a, b) => a * b, 1) };
}

/** Whether PowerSGD at `rank` sends fewer values for a gradient of `shape` (see the file comment). */
export function compressionPays(shape: readonly number[], rank: number, minCompressionRatio = 1): boolean {
  const view = matrixView(shape);
  if (!view || view.rows === 0 || view.cols === 0) return false;
  return view.rows * view.cols > minCompressionRatio * rank * (view.rows + view.cols);
}

export interface PowerSgdTraffic {
  /** Values one update all-reduces with PowerSGD: r(n + m) per compressed matrix (P, then Q) plus every other value. */
  readonly compressedValues: number;
  /** Values an exact all-reduce of every gradient sends. */
  readonly uncompressedValues: number;
  /** Gradients compressed, and their values. */
  readonly compressedMatrices: number;
  readonly valuesInCompressedMatrices: number;
}

/** The values one update all-reduces for parameters of these shapes (multiply by the bytes per value). */
export function powerSgdTraffic(shapes: ReadonlyArray<readonly number[]>, rank: number, minCompressionRatio = 1): PowerSgdTraffic {
  let compressedValues = 0;
  let uncompressedValues = 0;
  let compressedMatrices = 0;
  let valuesInCompressedMatrices = 0;
  for (const shape of shapes) {
    const size = shape.reduce((a, b) => a * b, 1);
    uncompressedValues += size;
    const view = matrixView(shape);
    if (view && compressionPays(shape, rank, minCompressionRatio)) {
      compressedValues += rank * (view.rows + view.cols);
      compressedMatrices++;
      valuesInCompressedMatrices += size;
    } else {
      compressedValues += size;
    }
  }
  return { compressedValues, uncompressedValues, compressedMatrices, valuesInCompressedMatrices };
}

/** Checks PowerSGD's options (a programming error, not a user's: the config already bounds train.powersgd_rank). */
export function checkPowerSgdOptions(rank: number, minCompressionRatio: number): void {
  if (!Number.isInteger(rank) || rank < 1) {
    throw new RangeError(`dalle: PowerSGD: rank must be an integer >= 1 (train.powersgd_rank), got ${rank}`);
  }
  if (!Number.isFinite(minCompressionRatio) || minCompressionRatio < 1) {
    throw new RangeError(`dalle: PowerSGD: minCompressionRatio must be a finite number >= 1, got ${minCompressionRatio}`);
  }
}
