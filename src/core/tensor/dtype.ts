// Data types. f16 and bf16 are stored as raw 16-bit patterns (Uint16Array on the JavaScript side).
export type DType = 'f32' | 'f16' | 'bf16' | 'i32';
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32'];

export function itemBytes(dtype: DType): number {
  return dtype === 'f16' || dtype === 'bf16' ? 2 : 4;
}

export function isFloat(dtype: DType): boolean {
  return dtype !== 'i32';
}

export type HostArray = Float32Array | Uint16Array | Int32Array;

export function hostArray(dtype: DType, length: number): HostArray {
  if (dtype === 'f32') return new Float32Array(length);
  if (dtype === 'i32') return new Int32Array(length);
  return new Uint16Array(length);
}

/** Fill kind understood by the native `fill` kernel. */
export function fillKind(dtype: DType): 'f32' | 'i32' | 'u16' {
  return dtype === 'f32' ? 'f32' : dtype === 'i32' ? 'i32' : 'u16';
}

// Scalar conversions (round to nearest even), used by references, tests and fills of 16-bit tensors.
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0];
}

export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const bits = u32buf[0];
  const sign = (bits >>> 16) & 0x8000;
  const ax = bits & 0x7fffffff;
  if (ax > 0x7f800000) return sign | 0x7e00;
  if (ax >= 0x477ff000) return sign | 0x7c00;
  if (ax < 0x38800000) {
    if (ax < 0x33000000) return sign;
    const mant = (ax & 0x7fffff) | 0x800000;
    const shift = 126 - (ax >>> 23);
    let val = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (val & 1))) val++;
    return sign | val;
  }
  let h = (((ax >>> 23) - 112) << 10) | ((ax & 0x7fffff) >>> 13);
  const rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Rounds a number to what the dtype can hold (for references that must see the same inputs as the kernels). */
export function roundTo(dtype: DType, x: number): number {
  switch (dtype) {
    case 'f32':
      return Math.fround(x);
    case 'f16':
      return f16BitsToF32(f32ToF16Bits(x));
    case 'bf16':
      return bf16BitsToF32(f32ToBf16Bits(x));
    case 'i32':
      return Math.trunc(x) | 0;
  }
}
