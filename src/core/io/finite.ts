/**
 * Non-finite values (NaN, +-Infinity) in loaded weights. A checkpoint written after a run diverged, or damaged in a
 * way its checksum cannot see (written so), would otherwise load and compute black images with exit code 0.
 */
import { HostArray } from './dtype';

/** A floating-point tensor of a file holds NaN or infinite values. */
export class NonFiniteTensorError extends Error {
  override name = 'NonFiniteTensorError';

  constructor(
    readonly file: string,
    readonly tensor: string,
    /** How many of its values are not finite. */
    readonly count: number,
    /** How many values it has. */
    readonly total: number,
  ) {
    super(`${file}: tensor '${tensor}' has ${count} non-finite value${count === 1 ? '' : 's'} (NaN or infinite) of ${total}`);
  }
}

/** IEEE half: exponent bits all ones. */
const F16_EXPONENT = 0x7c00;
/** bfloat16: exponent bits all ones. */
const BF16_EXPONENT = 0x7f80;

/** How many values of a floating-point array are NaN or infinite (0 for integer dtypes). */
export function countNonFinite(host: HostArray): number {
  let count = 0;
  switch (host.dtype) {
    case 'f32':
    case 'f64': {
      const data = host.data as Float32Array | Float64Array;
      for (let i = 0; i < data.length; i++) if (data[i] - data[i] !== 0) count++; // NaN and +-Inf give NaN
      return count;
    }
    case 'f16':
    case 'bf16': {
      const exponent = host.dtype === 'f16' ? F16_EXPONENT : BF16_EXPONENT;
      const data = host.data as Uint16Array;
      for (let i = 0; i < data.length; i++) if ((data[i] & exponent) === exponent) count++;
      return count;
    }
    default:
      return 0;
  }
}

/** Throws NonFiniteTensorError when `host` (tensor `name` of `file`) holds a NaN or infinite value. */
export function checkFinite(host: HostArray, file: string, name: string): void {
  const count = countNonFinite(host);
  if (count > 0) throw new NonFiniteTensorError(file, name, count, host.data.length);
}
