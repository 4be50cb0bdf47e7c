/**
 * The safetensors header: validation of untrusted headers, and deterministic encoding.
 *
 * Format (https://github.com/huggingface/safetensors, reference implementation safetensors/src/tensor.rs):
 *   bytes [0, 8)       N, a little-endian u64: the header length in bytes (the reference refuses N > 100,000,000)
 *   bytes [8, 8+N)     UTF-8 JSON object:
 *                        {"__metadata__": {string: string},                               (optional)
 *                         NAME: {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
 *                      writers pad it with spaces to a multiple of 8 bytes so that the data buffer is 8-aligned
 *   bytes [8+N, EOF)   the data buffer; a tensor's bytes are [8+N+BEGIN, 8+N+END), little-endian, row-major.
 * The entries' byte ranges, sorted by offset, must tile the data buffer exactly: the first begins at 0, each begins
 * where the previous ends, the last ends at the end of the file (zero-size tensors have BEGIN == END).
 *
 * The reference writer orders tensors by descending dtype (in its enum order, which is roughly descending alignment,
 * so every tensor is aligned for its element type) and then by name (byte-wise); the JSON lists `__metadata__` first
 * and then the tensors in data order, compact, no spaces. We write exactly that, so our files are byte-identical to
 * the reference's; metadata keys, which the reference writes in hash-map order, we sort.
 */
import { checkedElementCount, IoDtype, itemSize } from './dtype';
import { CORRUPT_FILE_HINT, FileFormatError } from './errors';
import { isJsonObject, JsonSyntaxError, JsonValue, parseStrictJson } from './strict-json';

export class SafetensorsError extends FileFormatError {
  override name = 'SafetensorsError';

  constructor(
    file: string,
    detail: string,
    /** The tensor the problem concerns, if one. */
    readonly tensor?: string,
    hint: string = CORRUPT_FILE_HINT,
  ) {
    super(file, tensor === undefined ? detail : `tensor ${JSON.stringify(tensor)}: ${detail}`, hint, 'safetensors');
  }
}

/** Bytes of the little-endian u64 header length that starts every file. */
export const LENGTH_PREFIX_BYTES = 8;
/** The reference implementation's limit on N (MAX_HEADER_SIZE in tensor.rs). */
export const MAX_HEADER_BYTES = 100_000_000;
/** JSON nesting allowed in a header: the format needs 3 (root, entry, shape); unknown fields may nest a little. */
const MAX_HEADER_JSON_DEPTH = 16;
const METADATA_KEY = '__metadata__';

/** Safetensors dtype names, in the reference's enum order (the writer's sort key), with our element types. */
const SAFETENSORS_DTYPES: readonly (readonly [string, IoDtype])[] = [
  ['BOOL', 'bool'],
  ['U8', 'u8'],
  ['I8', 'i8'],
  ['I16', 'i16'],
  ['U16', 'u16'],
  ['F16', 'f16'],
  ['BF16', 'bf16'],
  ['I32', 'i32'],
  ['U32', 'u32'],
  ['F32', 'f32'],
  ['F64', 'f64'],
  ['I64', 'i64'],
  ['U64', 'u64'],
];
const IO_DTYPE_BY_NAME = new Map(SAFETENSORS_DTYPES.map(([name, dtype]) => [name, dtype]));
const NAME_BY_IO_DTYPE = new Map(SAFETENSORS_DTYPES.map(([name, dtype]) => [dtype, name]));
const WRITE_RANK = new Map(SAFETENSORS_DTYPES.map(([, dtype], rank) => [dtype, rank]));
const SUPPORTED_NAMES = SAFETENSORS_DTYPES.map(([name]) => name).join(', ');

export function safetensorsDtypeName(dtype: IoDtype): string {
  const name = NAME_BY_IO_DTYPE.get(dtype);
  if (name === undefined) throw new TypeError(`dtype ${dtype} has no safetensors name`);
  return name;
}

/** The writer's sort key: higher ranks come first in the file. */
export function safetensorsWriteRank(dtype: IoDtype): number {
  return WRITE_RANK.get(dtype) ?? -1;
}

/** One tensor of a header. `begin` and `end` are byte offsets into the data buffer (not the file). */
export interface SafetensorsEntry {
  name: string;
  dtype: IoDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N: header bytes after the 8-byte length (padding included). */
  headerByteLength: number;
  /** File offset of the data buffer: 8 + N. */
  dataStart: number;
  dataByteLength: number;
  /** In data order (by offset). */
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
}

/**
 * N from the first 8 bytes, checked against the reference's limit and the file size, so that the caller may then
 * allocate and read N bytes.
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < LENGTH_PREFIX_BYTES || prefix.byteLength < LENGTH_PREFIX_BYTES) {
    throw new SafetensorsError(file, `the file is ${fileSize} bytes, shorter than the 8-byte header length`);
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, LENGTH_PREFIX_BYTES).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      file,
      `the header length field says ${length} bytes, more than the ${MAX_HEADER_BYTES} bytes that safetensors allows`,
    );
  }
  const headerByteLength = Number(length);
  if (LENGTH_PREFIX_BYTES + headerByteLength > fileSize) {
    throw new SafetensorsError(
      file,
      `the header length field says ${headerByteLength} bytes but only ${fileSize - LENGTH_PREFIX_BYTES} bytes follow it`,
    );
  }
  return headerByteLength;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeHeaderText(headerBytes: Uint8Array, file: string): string {
  try {
    return utf8Decoder.decode(headerBytes);
  } catch {
    throw new SafetensorsError(file, 'the header is not valid UTF-8 text');
  }
}

function parseHeaderJson(text: string, file: string): Map<string, JsonValue> {
  let root: JsonValue;
  try {
    root = parseStrictJson(text, MAX_HEADER_JSON_DEPTH);
  } catch (err) {
    if (err instanceof JsonSyntaxError) {
      throw new SafetensorsError(file, `the header is not valid JSON: ${err.message}`);
    }
    throw err;
  }
  if (!isJsonObject(root)) throw new SafetensorsError(file, 'the header is JSON but not an object');
  return root;
}

function parseMetadata(value: JsonValue, file: string): Record<string, string> {
  if (!isJsonObject(value)) throw new SafetensorsError(file, '"__metadata__" is not an object of strings');
  const metadata: [string, string][] = [];
  for (const [key, text] of value) {
    if (typeof text !== 'string') {
      throw new SafetensorsError(file, `"__metadata__" entry ${JSON.stringify(key)} is not a string`);
    }
    metadata.push([key, text]);
  }
  // Object.fromEntries defines own properties, so a key such as "__proto__" is an ordinary key here.
  return Object.fromEntries(metadata);
}

function isNonNegativeSafeInteger(value: JsonValue): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function parseEntry(name: string, value: JsonValue, dataByteLength: number, file: string): SafetensorsEntry {
  const fail = (detail: string, hint?: string): never => {
    throw new SafetensorsError(file, detail, name, hint);
  };
  if (!isJsonObject(value)) return fail('its header entry is not an object');
  const dtypeName = value.get('dtype');
  if (typeof dtypeName !== 'string') return fail('its header entry has no string "dtype"');
  const dtype = IO_DTYPE_BY_NAME.get(dtypeName);
  if (dtype === undefined) {
    return fail(
      `dtype ${JSON.stringify(dtypeName)} is not supported (supported: ${SUPPORTED_NAMES})`,
      'Convert the tensor to one of the supported dtypes (e.g. F32) before saving it',
    );
  }
  const shape = value.get('shape');
  if (!Array.isArray(shape)) return fail('its header entry has no "shape" array');
  const count = checkedElementCount(shape);
  if (typeof count === 'string') return fail(count);
  const offsets = value.get('data_offsets');
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInteger)) {
    return fail('"data_offsets" is not a pair of non-negative integers [begin, end]');
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) return fail(`"data_offsets" [${begin}, ${end}] ends before it begins`);
  const byteLength = count * itemSize(dtype);
  if (end - begin !== byteLength) {
    return fail(
      `"data_offsets" [${begin}, ${end}] span ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtypeName} ` +
        `needs ${byteLength}`,
    );
  }
  if (end > dataByteLength) {
    return fail(`its bytes [${begin}, ${end}) lie beyond the end of the ${dataByteLength}-byte data buffer`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

/** Entries sorted by offset must tile [0, dataByteLength) without gaps or overlaps. */
function checkTiling(entries: SafetensorsEntry[], dataByteLength: number, file: string): void {
  let expectedBegin = 0;
  for (const entry of entries) {
    if (entry.begin !== expectedBegin) {
      const problem =
        entry.begin < expectedBegin ? 'overlaps the previous tensor' : 'leaves a gap after the previous tensor';
      throw new SafetensorsError(
        file,
        `its bytes [${entry.begin}, ${entry.end}) ${problem} (which ends at ${expectedBegin})`,
        entry.name,
      );
    }
    expectedBegin = entry.end;
  }
  if (expectedBegin !== dataByteLength) {
    throw new SafetensorsError(
      file,
      `the tensors cover ${expectedBegin} bytes but the data buffer holds ${dataByteLength}: the file has trailing bytes`,
    );
  }
}

/**
 * Validate a header. `headerBytes` are the N bytes after the length prefix, `fileSize` the size of the whole file.
 * Throws SafetensorsError on anything the format does not allow.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const headerByteLength = headerBytes.byteLength;
  const dataStart = LENGTH_PREFIX_BYTES + headerByteLength;
  const dataByteLength = fileSize - dataStart;
  if (dataByteLength < 0) throw new SafetensorsError(file, 'the file ends inside the header');
  const root = parseHeaderJson(decodeHeaderText(headerBytes, file), file);
  let metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of root) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, file);
    else entries.push(parseEntry(name, value, dataByteLength, file));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  checkTiling(entries, dataByteLength, file);
  return { headerByteLength, dataStart, dataByteLength, entries, metadata };
}

/** What the encoder needs to know of each tensor, in file order. */
export interface SafetensorsEntryToWrite {
  name: string;
  dtype: IoDtype;
  shape: readonly number[];
  byteLength: number;
}

/** True when `text` survives UTF-8 encoding unchanged (no lone surrogates). */
export function isWellFormedUnicode(text: string): boolean {
  return Buffer.from(text, 'utf8').toString('utf8') === text;
}

/** Byte-wise comparison of UTF-8 encodings (Rust's String ordering, which the reference sorts names by). */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * The 8-byte length plus the padded JSON header for `entries` (already in file order), as the reference writes it.
 * With metadata === undefined the header has no "__metadata__" key.
 */
export function encodeSafetensorsHeader(
  entries: readonly SafetensorsEntryToWrite[],
  metadata: Readonly<Record<string, string>> | undefined,
): Uint8Array {
  const parts: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort(compareUtf8);
    const fields = keys.map((key) => `${JSON.stringify(key)}:${JSON.stringify(metadata[key])}`);
    parts.push(`"${METADATA_KEY}":{${fields.join(',')}}`);
  }
  let offset = 0;
  for (const entry of entries) {
    const end = offset + entry.byteLength;
    const info = `{"dtype":"${safetensorsDtypeName(entry.dtype)}","shape":[${entry.shape.join(',')}],"data_offsets":[${offset},${end}]}`;
    parts.push(`${JSON.stringify(entry.name)}:${info}`);
    offset = end;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const paddedLength = Math.ceil(json.byteLength / 8) * 8;
  if (paddedLength > MAX_HEADER_BYTES) {
    throw new RangeError(
      `the safetensors header would be ${paddedLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + paddedLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(paddedLength), true);
  out.set(json, LENGTH_PREFIX_BYTES);
  out.fill(0x20, LENGTH_PREFIX_BYTES + json.byteLength); // spaces: valid JSON whitespace
  return out;
}
