/**
 * Reading and writing safetensors files (format: see safetensors-header.ts).
 *
 * Reading validates the whole header before allocating anything sized by it; tensor bytes are then read on demand
 * (SafetensorsReader) or all at once (readSafetensorsSync). Writing is deterministic (the reference's order and
 * padding, byte-identical output) and atomic.
 */
import { writeFileAtomic, writeFileAtomicSync } from './atomic';
import { ByteSource, FileByteSource, MemoryByteSource } from './byte-source';
import { sha256Hex } from './checksums';
import { assertLittleEndianHost, bytesOfInput, HostArray, HostArrayInput, IoDtype, typedArrayFromBytes } from './dtype';
import {
  compareUtf8,
  encodeSafetensorsHeader,
  isWellFormedUnicode,
  LENGTH_PREFIX_BYTES,
  parseSafetensorsHeader,
  readHeaderLength,
  SafetensorsEntry,
  SafetensorsEntryToWrite,
  SafetensorsError,
  SafetensorsHeader,
  safetensorsWriteRank,
} from './safetensors-header';

export { SafetensorsError } from './safetensors-header';

export interface SafetensorsTensorInfo {
  name: string;
  dtype: IoDtype;
  shape: number[];
  byteLength: number;
}

export interface SafetensorsContents {
  /** In file order. */
  tensors: Map<string, HostArray>;
  metadata: Record<string, string>;
}

/** Tensors to write, by name. */
export type SafetensorsInput = ReadonlyMap<string, HostArrayInput> | Readonly<Record<string, HostArrayInput>>;

/**
 * A safetensors file opened for reading: the header is validated on open; each tensor's bytes are read when asked
 * for. Holds a file descriptor until close().
 */
export class SafetensorsReader {
  private readonly byName: Map<string, SafetensorsEntry>;

  private constructor(
    private readonly source: ByteSource,
    private readonly header: SafetensorsHeader,
  ) {
    this.byName = new Map(header.entries.map((entry) => [entry.name, entry]));
  }

  /** Open and validate `file`. Throws SafetensorsError for an invalid file, and fs errors (ENOENT...) as they are. */
  static open(file: string): SafetensorsReader {
    return SafetensorsReader.fromSource(new FileByteSource(file));
  }

  /** Validate an in-memory file. Tensors read from it are copies, not views of `bytes`. */
  static fromBytes(bytes: Uint8Array, name = '<memory>'): SafetensorsReader {
    return SafetensorsReader.fromSource(new MemoryByteSource(bytes, name));
  }

  private static fromSource(source: ByteSource): SafetensorsReader {
    try {
      assertLittleEndianHost();
      const prefix = source.read(0, LENGTH_PREFIX_BYTES);
      const headerByteLength = readHeaderLength(prefix, source.size, source.name);
      const headerBytes = source.read(LENGTH_PREFIX_BYTES, headerByteLength);
      if (headerBytes.byteLength !== headerByteLength) {
        throw new SafetensorsError(source.name, 'the file became shorter while its header was read');
      }
      return new SafetensorsReader(source, parseSafetensorsHeader(headerBytes, source.size, source.name));
    } catch (err) {
      source.close();
      throw err;
    }
  }

  get file(): string {
    return this.source.name;
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  /** Tensor names in file order. */
  get names(): string[] {
    return this.header.entries.map((entry) => entry.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): SafetensorsTensorInfo {
    const entry = this.entry(name);
    return { name, dtype: entry.dtype, shape: [...entry.shape], byteLength: entry.end - entry.begin };
  }

  /** The tensor's raw little-endian bytes (a fresh buffer, 8-aligned). */
  readBytes(name: string): Uint8Array {
    const entry = this.entry(name);
    const length = entry.end - entry.begin;
    const bytes = this.source.read(this.header.dataStart + entry.begin, length);
    if (bytes.byteLength !== length) {
      throw new SafetensorsError(
        this.file,
        'the file became shorter after it was opened',
        name,
        'Open it again once the writer has finished',
      );
    }
    return bytes;
  }

  read(name: string): HostArray {
    const entry = this.entry(name);
    return {
      dtype: entry.dtype,
      shape: [...entry.shape],
      data: typedArrayFromBytes(entry.dtype, this.readBytes(name)),
    };
  }

  readAll(): Map<string, HostArray> {
    return new Map(this.names.map((name) => [name, this.read(name)]));
  }

  close(): void {
    this.source.close();
  }

  private entry(name: string): SafetensorsEntry {
    const entry = this.byName.get(name);
    if (entry === undefined) {
      const names = this.names;
      const shown =
        names.length > 20 ? `${names.slice(0, 20).join(', ')}, ... (${names.length} in all)` : names.join(', ');
      throw new SafetensorsError(
        this.file,
        'no such tensor in the file',
        name,
        `The file holds: ${shown || '(no tensors)'}`,
      );
    }
    return entry;
  }
}

/** Read every tensor of a file. */
export function readSafetensorsSync(file: string): SafetensorsContents {
  const reader = SafetensorsReader.open(file);
  try {
    return { tensors: reader.readAll(), metadata: reader.metadata };
  } finally {
    reader.close();
  }
}

/** Read every tensor of an in-memory file. */
export function decodeSafetensors(bytes: Uint8Array, name = '<memory>'): SafetensorsContents {
  const reader = SafetensorsReader.fromBytes(bytes, name);
  return { tensors: reader.readAll(), metadata: reader.metadata };
}

function inputEntries(tensors: SafetensorsInput): [string, HostArrayInput][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
}

function checkMetadata(metadata: Readonly<Record<string, string>>): void {
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') throw new TypeError(`safetensors metadata ${JSON.stringify(key)} must be a string`);
    if (!isWellFormedUnicode(key) || !isWellFormedUnicode(value)) {
      throw new TypeError(`safetensors metadata ${JSON.stringify(key)} is not well-formed Unicode (lone surrogate)`);
    }
  }
}

/**
 * The file's bytes as chunks (length + header, then each tensor's bytes, not copied), in the reference's order:
 * descending dtype rank, then name. `metadata` undefined writes no "__metadata__" key.
 */
export function encodeSafetensors(
  tensors: SafetensorsInput,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array[] {
  assertLittleEndianHost();
  const items = inputEntries(tensors).map(([name, array]) => {
    if (name === '__metadata__') throw new TypeError('"__metadata__" is reserved and cannot name a tensor');
    if (!isWellFormedUnicode(name)) {
      throw new TypeError(`tensor name ${JSON.stringify(name)} is not well-formed Unicode`);
    }
    return { name, array, bytes: bytesOfInput(array, `tensor ${JSON.stringify(name)}`) };
  });
  if (metadata !== undefined) checkMetadata(metadata);
  items.sort(
    (a, b) => safetensorsWriteRank(b.array.dtype) - safetensorsWriteRank(a.array.dtype) || compareUtf8(a.name, b.name),
  );
  const entries: SafetensorsEntryToWrite[] = items.map(({ name, array, bytes }) => ({
    name,
    dtype: array.dtype,
    shape: array.shape,
    byteLength: bytes.byteLength,
  }));
  return [encodeSafetensorsHeader(entries, metadata), ...items.map((item) => item.bytes)];
}

/** Write a safetensors file atomically. Returns the SHA-256 (hex) of the bytes written, hashed as they are written. */
export function writeSafetensorsSync(
  file: string,
  tensors: SafetensorsInput,
  metadata?: Readonly<Record<string, string>>,
): string {
  const chunks = encodeSafetensors(tensors, metadata);
  writeFileAtomicSync(file, chunks);
  return sha256Hex(chunks);
}

/** Write a safetensors file atomically. Returns the SHA-256 (hex) of the bytes written. */
export async function writeSafetensors(
  file: string,
  tensors: SafetensorsInput,
  metadata?: Readonly<Record<string, string>>,
): Promise<string> {
  const chunks = encodeSafetensors(tensors, metadata);
  await writeFileAtomic(file, chunks);
  return sha256Hex(chunks);
}
