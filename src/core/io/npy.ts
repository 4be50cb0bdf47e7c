/**
 * NumPy .npy files (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
 *
 * Layout:
 *   bytes 0-5   magic "\x93NUMPY"
 *   bytes 6-7   format version: major, minor (1.0, 2.0 or 3.0)
 *   then        header length HLEN: little-endian u16 (1.0) or u32 (2.0, 3.0)
 *   then        HLEN bytes of header: a Python dict literal (latin-1 in 1.0/2.0, UTF-8 in 3.0)
 *                 {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 *               padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes
 *   then        the elements, product(shape) * itemsize bytes, C order (or Fortran order when fortran_order)
 *
 * Reading: versions 1.0-3.0; numeric dtypes little-endian or byte-order-free ('|'); Fortran-ordered arrays are
 * transposed into C order (NumPy writes them for transposed arrays, so refusing them would surprise users).
 * Refused with a message: big-endian data, object arrays (pickles), structured/string/complex/datetime dtypes.
 * Writing: C order, format 1.0 (2.0 when the header needs more than 65535 bytes), byte-identical to numpy.save.
 */
import { writeFileAtomic, writeFileAtomicSync } from './atomic';
import { ByteSource, FileByteSource, MemoryByteSource } from './byte-source';
import {
  assertLittleEndianHost,
  bytesOfInput,
  checkedElementCount,
  HostArray,
  HostArrayInput,
  IoDtype,
  itemSize,
  typedArrayFromBytes,
} from './dtype';
import { CORRUPT_FILE_HINT, FileFormatError } from './errors';
import { parsePythonLiteral, PythonLiteralError, PyTuple, PyValue } from './python-literal';

export class NpyError extends FileFormatError {
  override name = 'NpyError';

  constructor(file: string, detail: string, hint: string = CORRUPT_FILE_HINT) {
    super(file, detail, hint, '.npy');
  }
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
/** magic + version bytes */
const PREAMBLE_BYTES = 8;
/** Data starts at a multiple of this (numpy.lib.format.ARRAY_ALIGN). */
const ARRAY_ALIGN = 64;
/** numpy.lib.format.GROWTH_AXIS_MAX_DIGITS: spare spaces numpy leaves so the first dimension can grow in place. */
const GROWTH_AXIS_MAX_DIGITS = 21;
/** NumPy refuses longer headers by default (max_header_size, "may not be safe to load"); so do we. */
export const MAX_NPY_HEADER_CHARS = 10000;

/** The descr strings we write, one per element type; bfloat16 has none (NumPy has no bfloat16). */
const DESCR_BY_DTYPE: Partial<Record<IoDtype, string>> = {
  f64: '<f8',
  f32: '<f4',
  f16: '<f2',
  i64: '<i8',
  i32: '<i4',
  i16: '<i2',
  i8: '|i1',
  u64: '<u8',
  u32: '<u4',
  u16: '<u2',
  u8: '|u1',
  bool: '|b1',
};

/** Type code (kind + size, without the byte-order character) to element type. */
const DTYPE_BY_TYPE_CODE: Record<string, IoDtype> = {
  f8: 'f64',
  f4: 'f32',
  f2: 'f16',
  i8: 'i64',
  i4: 'i32',
  i2: 'i16',
  i1: 'i8',
  u8: 'u64',
  u4: 'u32',
  u2: 'u16',
  u1: 'u8',
  b1: 'bool',
};

export interface NpyHeader {
  version: 1 | 2 | 3;
  dtype: IoDtype;
  shape: number[];
  fortranOrder: boolean;
  /** File offset of the first element. */
  dataOffset: number;
  dataByteLength: number;
}

function dtypeFromDescr(descr: PyValue, file: string): IoDtype {
  if (Array.isArray(descr)) {
    throw new NpyError(
      file,
      'the array has a structured dtype (record fields)',
      'Save each field as its own plain numeric array',
    );
  }
  if (typeof descr !== 'string') throw new NpyError(file, `'descr' is not a dtype string: ${String(descr)}`);
  const order = descr[0];
  const typeCode = descr.slice(1);
  if (typeCode === 'O' || typeCode.startsWith('O')) {
    throw new NpyError(
      file,
      'it holds an object array (pickled Python objects), which can run code when loaded',
      'Save a numeric array instead, e.g. np.save(path, np.asarray(x, dtype=np.int32))',
    );
  }
  const dtype = Object.prototype.hasOwnProperty.call(DTYPE_BY_TYPE_CODE, typeCode)
    ? DTYPE_BY_TYPE_CODE[typeCode]
    : undefined;
  if (dtype === undefined || !['<', '>', '|', '='].includes(order)) {
    throw new NpyError(
      file,
      `dtype ${JSON.stringify(descr)} is not supported (supported: ${Object.keys(DTYPE_BY_TYPE_CODE).join(', ')})`,
      'Convert the array to a plain numeric dtype, e.g. arr.astype(np.float32)',
    );
  }
  // '=' is the reader's native order, little-endian on every platform we run on; byte order is moot for 1-byte types
  if (order === '>' && itemSize(dtype) > 1) {
    throw new NpyError(
      file,
      `the data is big-endian (${descr})`,
      "Convert it to little-endian before saving: arr.astype(arr.dtype.newbyteorder('<'))",
    );
  }
  return dtype;
}

function parseHeaderDict(text: string, file: string): { dtype: IoDtype; shape: number[]; fortranOrder: boolean } {
  let dict: PyValue;
  try {
    dict = parsePythonLiteral(text);
  } catch (err) {
    if (err instanceof PythonLiteralError) {
      throw new NpyError(file, `the header is not a valid dict literal: ${err.message}`);
    }
    throw err;
  }
  if (!(dict instanceof Map)) throw new NpyError(file, 'the header is not a dict');
  const keys = [...dict.keys()].sort();
  if (keys.join(',') !== 'descr,fortran_order,shape') {
    throw new NpyError(file, `the header has keys [${keys.join(', ')}], not exactly descr, fortran_order, shape`);
  }
  const dtype = dtypeFromDescr(dict.get('descr') ?? null, file);
  const fortranOrder = dict.get('fortran_order');
  if (typeof fortranOrder !== 'boolean') throw new NpyError(file, "'fortran_order' is not True or False");
  const shape = dict.get('shape');
  if (!(shape instanceof PyTuple)) throw new NpyError(file, "'shape' is not a tuple");
  const count = checkedElementCount(shape.items);
  if (typeof count === 'string') throw new NpyError(file, `'shape' is invalid: ${count}`);
  return { dtype, shape: shape.items as number[], fortranOrder };
}

function readHeader(source: ByteSource): NpyHeader {
  const file = source.name;
  const preamble = source.read(0, PREAMBLE_BYTES + 4);
  if (preamble.byteLength < PREAMBLE_BYTES || MAGIC.some((byte, i) => preamble[i] !== byte)) {
    throw new NpyError(
      file,
      'it does not start with the .npy magic "\\x93NUMPY"',
      'Is it a .npy file? (.npz archives are zip files)',
    );
  }
  const major = preamble[6];
  const minor = preamble[7];
  if ((major !== 1 && major !== 2 && major !== 3) || minor !== 0) {
    throw new NpyError(file, `format version ${major}.${minor} is not one of 1.0, 2.0, 3.0`);
  }
  const lengthBytes = major === 1 ? 2 : 4;
  if (preamble.byteLength < PREAMBLE_BYTES + lengthBytes) {
    throw new NpyError(file, 'the file ends inside the header length');
  }
  const view = new DataView(preamble.buffer, preamble.byteOffset, preamble.byteLength);
  const headerLength = major === 1 ? view.getUint16(PREAMBLE_BYTES, true) : view.getUint32(PREAMBLE_BYTES, true);
  const headerStart = PREAMBLE_BYTES + lengthBytes;
  if (headerStart + headerLength > source.size) {
    throw new NpyError(
      file,
      `the header length field says ${headerLength} bytes but only ${source.size - headerStart} follow it`,
    );
  }
  // 3.0 headers are UTF-8, so up to 4 bytes a character; this bounds the bytes we read before checking the characters
  if (headerLength > 4 * MAX_NPY_HEADER_CHARS) {
    throw new NpyError(
      file,
      `the header is ${headerLength} bytes, more than NumPy's default limit of ${MAX_NPY_HEADER_CHARS} characters`,
    );
  }
  const headerBytes = source.read(headerStart, headerLength);
  if (headerBytes.byteLength !== headerLength) {
    throw new NpyError(file, 'the file became shorter while its header was read');
  }
  let text: string;
  try {
    // Buffer's latin1 is ISO-8859-1 (byte = code point) as in Python; TextDecoder's 'latin1' is windows-1252
    text =
      major === 3
        ? new TextDecoder('utf-8', { fatal: true }).decode(headerBytes)
        : Buffer.from(headerBytes.buffer, headerBytes.byteOffset, headerBytes.byteLength).toString('latin1');
  } catch {
    throw new NpyError(file, 'the header is not valid UTF-8 text');
  }
  if (text.length > MAX_NPY_HEADER_CHARS) {
    throw new NpyError(
      file,
      `the header is ${text.length} characters, more than NumPy's default limit of ${MAX_NPY_HEADER_CHARS}`,
    );
  }
  const { dtype, shape, fortranOrder } = parseHeaderDict(text, file);
  const dataOffset = headerStart + headerLength;
  const dataByteLength = source.size - dataOffset;
  const expected = (checkedElementCount(shape) as number) * itemSize(dtype);
  if (expected !== dataByteLength) {
    const problem = expected > dataByteLength ? 'the file is truncated' : 'the file has trailing bytes';
    throw new NpyError(
      file,
      `shape (${shape.join(', ')}) of ${dtype} needs ${expected} data bytes but ${dataByteLength} follow the header: ${problem}`,
    );
  }
  return { version: major, dtype, shape, fortranOrder, dataOffset, dataByteLength };
}

/**
 * Reorder Fortran-order (column-major) bytes into C order. Elements are moved as whole words of up to 4 bytes (so
 * NaN payloads of f64 survive: no element passes through a JS number of a different width).
 */
function fortranToC(bytes: Uint8Array, shape: readonly number[], elementBytes: number): Uint8Array {
  if (shape.length <= 1) return bytes;
  const wordBytes = Math.min(elementBytes, 4);
  const wordsPerElement = elementBytes / wordBytes;
  const WordArray = wordBytes === 1 ? Uint8Array : wordBytes === 2 ? Uint16Array : Uint32Array;
  const source = new WordArray(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / wordBytes);
  const target = new WordArray(source.length);
  // Fortran strides in elements: axis 0 varies fastest
  const ndim = shape.length;
  const fortranStride: number[] = new Array<number>(ndim);
  let stride = 1;
  for (let axis = 0; axis < ndim; axis++) {
    fortranStride[axis] = stride;
    stride *= shape[axis];
  }
  const count = stride;
  const index: number[] = new Array<number>(ndim).fill(0);
  let fortranOffset = 0;
  for (let c = 0; c < count; c++) {
    for (let w = 0; w < wordsPerElement; w++)
      target[c * wordsPerElement + w] = source[fortranOffset * wordsPerElement + w];
    // advance the C-order index (last axis fastest), keeping fortranOffset in step
    for (let axis = ndim - 1; axis >= 0; axis--) {
      index[axis]++;
      fortranOffset += fortranStride[axis];
      if (index[axis] < shape[axis]) break;
      fortranOffset -= index[axis] * fortranStride[axis];
      index[axis] = 0;
    }
  }
  return new Uint8Array(target.buffer);
}

function readArray(source: ByteSource): HostArray {
  try {
    assertLittleEndianHost();
    const header = readHeader(source);
    const bytes = source.read(header.dataOffset, header.dataByteLength);
    if (bytes.byteLength !== header.dataByteLength) {
      throw new NpyError(source.name, 'the file became shorter while it was read');
    }
    const ordered = header.fortranOrder ? fortranToC(bytes, header.shape, itemSize(header.dtype)) : bytes;
    return { dtype: header.dtype, shape: header.shape, data: typedArrayFromBytes(header.dtype, ordered) };
  } finally {
    source.close();
  }
}

/** The header of a .npy file (dtype, shape, where the data starts), e.g. to read part of the data yourself. */
export function readNpyHeaderSync(file: string): NpyHeader {
  const source = new FileByteSource(file);
  try {
    return readHeader(source);
  } finally {
    source.close();
  }
}

/** Read a .npy file. Throws NpyError for an invalid or unsupported file, fs errors (ENOENT...) as they are. */
export function readNpySync(file: string): HostArray {
  return readArray(new FileByteSource(file));
}

/** Read an in-memory .npy file (the result does not share memory with `bytes`). */
export function decodeNpy(bytes: Uint8Array, name = '<memory>'): HostArray {
  return readArray(new MemoryByteSource(bytes, name));
}

/** Python's repr of a shape tuple: (), (5,), (2, 3). */
function shapeRepr(shape: readonly number[]): string {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

/** magic, version, length and padded header, exactly as numpy.lib.format._write_array_header writes them. */
function encodeHeader(descr: string, shape: readonly number[]): Uint8Array {
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length > 0) dict += ' '.repeat(Math.max(0, GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length));
  const withNewline = dict.length + 1;
  for (const [major, lengthBytes] of [
    [1, 2],
    [2, 4],
  ] as const) {
    // numpy pads by ARRAY_ALIGN - (used % ARRAY_ALIGN): a full 64 spaces when already aligned, as here
    const padding = ARRAY_ALIGN - ((PREAMBLE_BYTES + lengthBytes + withNewline) % ARRAY_ALIGN);
    const headerLength = withNewline + padding;
    if (lengthBytes === 2 && headerLength > 0xffff) continue;
    const out = new Uint8Array(PREAMBLE_BYTES + lengthBytes + headerLength);
    out.set(MAGIC, 0);
    out[6] = major;
    out[7] = 0;
    const view = new DataView(out.buffer);
    if (lengthBytes === 2) view.setUint16(PREAMBLE_BYTES, headerLength, true);
    else view.setUint32(PREAMBLE_BYTES, headerLength, true);
    const text = dict + ' '.repeat(padding) + '\n';
    out.set(Buffer.from(text, 'latin1'), PREAMBLE_BYTES + lengthBytes);
    return out;
  }
  throw new RangeError('unreachable: a .npy 2.0 header holds 4 GB');
}

/** The .npy bytes of an array as chunks (header, then the data, not copied). */
export function encodeNpy(array: HostArrayInput): Uint8Array[] {
  assertLittleEndianHost();
  const data = bytesOfInput(array, '.npy array');
  const descr = DESCR_BY_DTYPE[array.dtype];
  if (descr === undefined) {
    throw new TypeError(
      `dtype ${array.dtype} cannot be saved as .npy: NumPy has no such dtype; convert it to f32 first`,
    );
  }
  return [encodeHeader(descr, array.shape), data];
}

/** Write a .npy file atomically. */
export function writeNpySync(file: string, array: HostArrayInput): void {
  writeFileAtomicSync(file, encodeNpy(array));
}

/** Write a .npy file atomically. */
export async function writeNpy(file: string, array: HostArrayInput): Promise<void> {
  await writeFileAtomic(file, encodeNpy(array));
}
