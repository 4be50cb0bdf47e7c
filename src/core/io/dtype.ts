/**
 * Element types of arrays in files, and the plain data that readers return and writers take.
 *
 * The file formats here (safetensors, .npy) are little-endian, and so are typed arrays on every platform that Node
 * supports in practice (x64, arm64). `assertLittleEndianHost` turns the one assumption into a clear error elsewhere.
 *
 * f16 and bf16 have no typed array in Node 20: their data is a Uint16Array of the raw bit patterns.
 */
import * as os from 'node:os';

/** The typed array that holds each element type. */
export interface TypedArrayOf {
  f64: Float64Array;
  f32: Float32Array;
  f16: Uint16Array; // IEEE half, raw bits
  bf16: Uint16Array; // bfloat16 (the top half of an f32), raw bits
  i64: BigInt64Array;
  i32: Int32Array;
  i16: Int16Array;
  i8: Int8Array;
  u64: BigUint64Array;
  u32: Uint32Array;
  u16: Uint16Array;
  u8: Uint8Array;
  bool: Uint8Array; // one byte per element, 0 or 1
}

export type IoDtype = keyof TypedArrayOf;
export type AnyTypedArray = TypedArrayOf[IoDtype];

/** An array as files hold it: element type, shape (row-major, C order) and the elements. */
export interface HostArray<D extends IoDtype = IoDtype> {
  dtype: D;
  shape: number[];
  data: TypedArrayOf[D];
}

/**
 * What writers accept: `data` is either the typed array of `dtype` (see TypedArrayOf) or its raw little-endian bytes
 * as a Uint8Array, which lets callers hand over f16/bf16 buffers or native memory without a copy.
 */
export interface HostArrayInput {
  dtype: IoDtype;
  shape: readonly number[];
  data: ArrayBufferView;
}

type TypedArrayConstructor =
  | Float64ArrayConstructor
  | Float32ArrayConstructor
  | BigInt64ArrayConstructor
  | BigUint64ArrayConstructor
  | Int32ArrayConstructor
  | Int16ArrayConstructor
  | Int8ArrayConstructor
  | Uint32ArrayConstructor
  | Uint16ArrayConstructor
  | Uint8ArrayConstructor;

const CONSTRUCTORS: { [D in IoDtype]: TypedArrayConstructor } = {
  f64: Float64Array,
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i64: BigInt64Array,
  i32: Int32Array,
  i16: Int16Array,
  i8: Int8Array,
  u64: BigUint64Array,
  u32: Uint32Array,
  u16: Uint16Array,
  u8: Uint8Array,
  bool: Uint8Array,
};

export const IO_DTYPES = Object.keys(CONSTRUCTORS) as readonly IoDtype[];

export function isIoDtype(value: string): value is IoDtype {
  return Object.prototype.hasOwnProperty.call(CONSTRUCTORS, value);
}

/** Bytes per element. */
export function itemSize(dtype: IoDtype): number {
  return CONSTRUCTORS[dtype].BYTES_PER_ELEMENT;
}

export function assertLittleEndianHost(): void {
  if (os.endianness() !== 'LE') {
    throw new Error('dalle file IO assumes a little-endian host; this machine is big-endian, which is not supported');
  }
}

/**
 * Number of elements of a shape, or a description of why the shape is invalid. Dimensions must be non-negative safe
 * integers and the product must stay a safe integer (2^53), so that byte counts computed from it are exact.
 */
export function checkedElementCount(shape: readonly unknown[]): number | string {
  let count = 1;
  for (let axis = 0; axis < shape.length; axis++) {
    const dim = shape[axis];
    if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 0) {
      const shown = typeof dim === 'string' ? JSON.stringify(dim) : String(dim);
      return `dimension ${axis} of the shape is ${shown}, not a non-negative integer`;
    }
    count *= dim;
    if (!Number.isSafeInteger(count)) return `the shape [${shape.join(', ')}] has more than 2^53 elements`;
  }
  return count;
}

/** Number of elements of a shape given by code (not by a file): throws RangeError on an invalid shape. */
export function elementCount(shape: readonly number[]): number {
  const count = checkedElementCount(shape);
  if (typeof count === 'string') throw new RangeError(count);
  return count;
}

/**
 * The bytes of an array that is about to be written, checked against its dtype and shape. Throws TypeError when the
 * data's typed array does not match the dtype and RangeError when its size does not match the shape.
 */
export function bytesOfInput(array: HostArrayInput, what: string): Uint8Array {
  if (!isIoDtype(array.dtype)) throw new TypeError(`${what}: unknown dtype ${JSON.stringify(array.dtype)}`);
  const data = array.data;
  if (!ArrayBuffer.isView(data)) throw new TypeError(`${what}: data must be a typed array or a Uint8Array of bytes`);
  const expectedConstructor = CONSTRUCTORS[array.dtype];
  const isRawBytes = data instanceof Uint8Array;
  if (!isRawBytes && data.constructor !== expectedConstructor) {
    throw new TypeError(
      `${what}: dtype ${array.dtype} needs a ${expectedConstructor.name} (or a Uint8Array of its bytes), got a ${data.constructor.name}`,
    );
  }
  const count = elementCount(array.shape);
  const expectedBytes = count * itemSize(array.dtype);
  if (data.byteLength !== expectedBytes) {
    throw new RangeError(
      `${what}: shape [${array.shape.join(', ')}] of ${array.dtype} needs ${expectedBytes} bytes, data has ${data.byteLength}`,
    );
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * The typed array of `dtype` over `bytes`: a view when the bytes are aligned for the element size, else a copy.
 * `bytes.byteLength` must be a multiple of the element size.
 */
export function typedArrayFromBytes<D extends IoDtype>(dtype: D, bytes: Uint8Array): TypedArrayOf[D] {
  const Constructor = CONSTRUCTORS[dtype];
  const size = Constructor.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  return new Constructor(
    aligned.buffer as ArrayBuffer,
    aligned.byteOffset,
    aligned.byteLength / size,
  ) as TypedArrayOf[D];
}

const INT32_MIN = -(2n ** 31n);
const INT32_MAX = 2n ** 31n - 1n;

/**
 * Int64 values as Int32, for files (PyTorch token ids, NumPy defaults) that store indices as int64 while our kernels
 * use int32. Throws RangeError naming the first value outside the int32 range.
 */
export function narrowInt64ToInt32(data: BigInt64Array | BigUint64Array, what = 'array'): Int32Array {
  const out = new Int32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const value = data[i];
    if (value < INT32_MIN || value > INT32_MAX) {
      throw new RangeError(
        `${what}: element ${i} is ${value}, outside the int32 range; it cannot be narrowed to int32`,
      );
    }
    out[i] = Number(value);
  }
  return out;
}

export function widenInt32ToInt64(data: Int32Array): BigInt64Array {
  const out = new BigInt64Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = BigInt(data[i]);
  return out;
}
