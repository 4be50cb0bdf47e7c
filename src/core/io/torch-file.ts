/**
 * Reads a file written by PyTorch's torch.save, in either of its formats, without running any of it:
 *
 *   zip (PyTorch >= 1.6): an archive `NAME/data.pkl` (the pickle), `NAME/data/KEY` (one raw little-endian storage per
 *     key), `NAME/version`; the pickle's persistent ids are ('storage', StorageType, KEY, location, numel).
 *   legacy: pickles of the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001 and a sys-info dict, then
 *     the main pickle (persistent ids ('storage', StorageType, KEY, location, numel, None), and ('module', Class,
 *     source file, source) for module classes), then a pickle of the sorted storage keys, then each storage as an
 *     int64 element count and its raw bytes.
 *
 * The pickle goes through the restricted reader (pickle.ts) with these torch globals only: `torch._utils.
 * _rebuild_tensor_v2` and `_rebuild_parameter` (rebuilt here as TorchTensors), `torch.device` (read as its string),
 * `torch.FloatStorage` / `torch.HalfStorage` (f32 / f16 storages), plus the module classes the caller names (read as
 * records). Every size in the file is checked against the file before it is used.
 */
import * as yauzl from 'yauzl';
import { f16BitsToF32 } from '../tensor/dtype';
import { FileByteSource } from './byte-source';
import { GlobalUse, PickleCallError, PickleDict, PickleFormatError, PickleGlobal, PickleTuple, describe, unpickle } from './pickle';

/** A torch.save file that cannot be read (not one, truncated, inconsistent): exit code 4 (input). */
export class TorchFileError extends Error {
  override readonly name = 'TorchFileError';

  constructor(
    readonly file: string,
    detail: string,
    readonly hint = 'the file is truncated or damaged, or was not written by torch.save: download or copy it again',
  ) {
    super(`cannot read ${file}: ${detail}`);
  }
}

export type TorchDtype = 'f32' | 'f16';

const STORAGE_TYPES: Readonly<Record<string, TorchDtype>> = { 'torch.FloatStorage': 'f32', 'torch.HalfStorage': 'f16' };
const ELEMENT_BYTES: Readonly<Record<TorchDtype, number>> = { f32: 4, f16: 2 };
/** The main pickle of a module file holds its structure, not its weights: tens of KB (the released ones < 1 MB). */
export const MAX_PICKLE_BYTES = 64 << 20;
/** Elements of one tensor (the released dVAE's largest is 8192 x 2048). */
const MAX_TENSOR_ELEMENTS = 1 << 28;
/** The legacy format's first pickle, and the protocol version after it (torch/serialization.py). */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

/** One storage the pickle refers to, filled once the storages are read. */
interface Storage {
  readonly key: string;
  readonly dtype: TorchDtype;
  readonly numel: number;
  data?: Float32Array | Uint16Array;
}

/** A tensor rebuilt from the file, as a contiguous copy; f16 values stay raw bits until `toFloat32`. */
export class TorchTensor {
  data: Float32Array | Uint16Array = new Float32Array(0);

  constructor(
    readonly dtype: TorchDtype,
    readonly shape: readonly number[],
    /** Where it lies in its storage (read after the pickle). */
    readonly source: { readonly storage: Storage; readonly offset: number; readonly stride: readonly number[] },
  ) {}

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** The values as f32 (f16 widens exactly). */
  toFloat32(): Float32Array {
    if (this.data instanceof Float32Array) return this.data;
    const out = new Float32Array(this.data.length);
    for (let i = 0; i < out.length; i++) out[i] = f16BitsToF32(this.data[i]);
    return out;
  }
}

export interface TorchFile {
  readonly file: string;
  readonly format: 'zip' | 'legacy';
  /** The object saved: module records (PickleObject), dicts, TorchTensors, ... */
  readonly root: unknown;
  readonly tensors: readonly TorchTensor[];
}

/**
 * Reads `file`. `classes` are the dotted class names that may appear as objects (read as records); `file`'s bytes decide
 * the format (zip's 'PK\3\4', or a pickle's protocol-2 header for the legacy format).
 */
export async function readTorchFile(file: string, classes: readonly string[]): Promise<TorchFile> {
  const source = openSource(file);
  let head: Uint8Array;
  try {
    head = source.read(0, 4);
  } finally {
    source.close();
  }
  if (head.length === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return readZip(file, classes);
  if (head.length >= 2 && head[0] === 0x80 && head[1] === 0x02) return readLegacy(file, classes);
  throw new TorchFileError(file, 'it is neither a zip archive nor a pickle (the two formats torch.save writes)', 'give the .pkl / .pt file that torch.save wrote (OpenAI\'s released encoder.pkl and decoder.pkl are such files)');
}

function openSource(file: string): FileByteSource {
  try {
    return new FileByteSource(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new TorchFileError(file, code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : `cannot open it (${code ?? String(error)})`, 'check the path');
  }
}

/** The pickle's view of torch: storages via persistent ids, tensors and parameters rebuilt, devices as strings. */
class TorchPickleContext {
  readonly storages = new Map<string, Storage>();
  readonly tensors: TorchTensor[] = [];
  readonly globals: Map<string, GlobalUse>;

  constructor(
    readonly legacy: boolean,
    classes: readonly string[],
  ) {
    this.globals = new Map<string, GlobalUse>([
      ['torch._utils._rebuild_tensor_v2', { kind: 'function', call: (args, at) => this.rebuildTensor(args, at) }],
      ['torch._utils._rebuild_parameter', { kind: 'function', call: (args, at) => rebuildParameter(args, at) }],
      ['torch.device', { kind: 'function', call: (args, at) => device(args, at) }],
      ...Object.keys(STORAGE_TYPES).map((name): [string, GlobalUse] => [name, { kind: 'reference' }]),
      ...classes.map((name): [string, GlobalUse] => [name, { kind: 'class' }]),
    ]);
  }

  persistentLoad(pid: unknown, at: number): unknown {
    const items = pid instanceof PickleTuple ? pid.items : [];
    if (this.legacy && items[0] === 'module' && items.length === 4) {
      // ('module', Class, source file, source): the legacy format's record of a module class; the class was allowed
      // (or refused) when its GLOBAL was read. Its source is only text that torch.load compares; nothing runs it.
      if (!(items[1] instanceof PickleGlobal) || items[1].use.kind !== 'class') throw new PickleCallError(`a module persistent id names ${describe(items[1])}, not a module class`, at, true);
      return items[1];
    }
    const size = this.legacy ? 6 : 5;
    if (items[0] !== 'storage' || items.length !== size) throw new PickleCallError(`a persistent id is ${describe(pid)}, not a ('storage', ...) tuple of ${size}`, at, true);
    const [, type, key, location, numel] = items;
    if (this.legacy && items[5] !== null) throw new PickleCallError('a storage is a view into another one (legacy view metadata), which module files never hold', at, true);
    if (!(type instanceof PickleGlobal) || !Object.hasOwn(STORAGE_TYPES, type.dotted)) throw new PickleCallError(`a storage's type is ${describe(type)}`, at);
    if (typeof key !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(key)) throw new PickleCallError(`a storage key is ${describe(key)}`, at);
    if (typeof location !== 'string') throw new PickleCallError(`a storage location is ${describe(location)}`, at);
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw new PickleCallError(`storage ${key} has ${describe(numel)} elements`, at);
    const dtype = STORAGE_TYPES[type.dotted];
    const known = this.storages.get(key);
    if (known && (known.dtype !== dtype || known.numel !== numel)) throw new PickleCallError(`storage ${key} is named twice with different types or sizes`, at);
    const storage = known ?? { key, dtype, numel };
    this.storages.set(key, storage);
    return storage;
  }

  /** _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]). */
  private rebuildTensor(args: readonly unknown[], at: number): TorchTensor {
    const [storage, offset, size, stride, requiresGrad, hooks] = args;
    if (args.length < 6 || args.length > 7 || (args.length === 7 && args[6] !== null && !(args[6] instanceof PickleDict && args[6].entries.size === 0))) {
      throw new PickleCallError(`_rebuild_tensor_v2 takes 6 arguments (or a 7th, empty metadata), got ${args.length}`, at);
    }
    if (!isStorage(storage)) throw new PickleCallError(`_rebuild_tensor_v2's storage is ${describe(storage)}`, at);
    const shape = intTuple(size, 'size', at);
    const strides = intTuple(stride, 'stride', at);
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw new PickleCallError(`a tensor's storage offset is ${describe(offset)}`, at);
    if (strides.length !== shape.length) throw new PickleCallError(`a tensor has ${shape.length} sizes but ${strides.length} strides`, at);
    if (typeof requiresGrad !== 'boolean') throw new PickleCallError(`requires_grad is ${describe(requiresGrad)}`, at);
    checkNoHooks(hooks, at);
    const numel = shape.reduce((a, b) => a * b, 1);
    if (numel > MAX_TENSOR_ELEMENTS) throw new PickleCallError(`a tensor of shape (${shape.join(', ')}) has more than ${MAX_TENSOR_ELEMENTS} elements`, at);
    if (numel > 0) {
      const last = offset + shape.reduce((sum, n, i) => sum + (n - 1) * strides[i], 0);
      if (last >= storage.numel) throw new PickleCallError(`a tensor of shape (${shape.join(', ')}) at offset ${offset} reaches element ${last} of storage ${storage.key}, which has ${storage.numel}`, at);
    }
    const tensor = new TorchTensor(storage.dtype, shape, { storage, offset, stride: strides });
    this.tensors.push(tensor);
    return tensor;
  }

  /** Copies every tensor out of its storage (row-major), once all storages are read. */
  materialize(): void {
    for (const t of this.tensors) {
      const { storage, offset, stride } = t.source;
      const data = storage.data!;
      const out = data instanceof Float32Array ? new Float32Array(t.numel) : new Uint16Array(t.numel);
      let expected = 1;
      const contiguous = t.shape.every((_, d) => {
        const i = t.shape.length - 1 - d; // innermost first
        const ok = t.shape[i] === 1 || stride[i] === expected;
        expected *= t.shape[i];
        return ok;
      });
      if (contiguous) {
        // Row-major already (every parameter torch.save writes): one copy.
        out.set(data.subarray(offset, offset + out.length));
        t.data = out;
        continue;
      }
      const index = new Array<number>(t.shape.length).fill(0);
      for (let i = 0; i < out.length; i++) {
        let p = offset;
        for (let d = 0; d < index.length; d++) p += index[d] * stride[d];
        out[i] = data[p];
        for (let d = index.length - 1; d >= 0; d--) {
          if (++index[d] < t.shape[d]) break;
          index[d] = 0;
        }
      }
      t.data = out;
    }
  }
}

function isStorage(value: unknown): value is Storage {
  return typeof value === 'object' && value !== null && 'key' in value && 'numel' in value && 'dtype' in value;
}

function intTuple(value: unknown, what: string, at: number): number[] {
  if (!(value instanceof PickleTuple) || value.items.length > 8) throw new PickleCallError(`a tensor's ${what} is ${describe(value)}, not a tuple of at most 8 integers`, at);
  return value.items.map((n) => {
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new PickleCallError(`a tensor's ${what} holds ${describe(n)}`, at);
    return n;
  });
}

function checkNoHooks(hooks: unknown, at: number): void {
  if (!(hooks instanceof PickleDict) || hooks.entries.size > 0) throw new PickleCallError(`a tensor's backward hooks are ${describe(hooks)}, not an empty OrderedDict`, at, true);
}

/** _rebuild_parameter(data, requires_grad, backward_hooks): an nn.Parameter is its tensor here. */
function rebuildParameter(args: readonly unknown[], at: number): TorchTensor {
  if (args.length !== 3 || !(args[0] instanceof TorchTensor) || typeof args[1] !== 'boolean') throw new PickleCallError('_rebuild_parameter takes (tensor, requires_grad, hooks)', at);
  checkNoHooks(args[2], at);
  return args[0];
}

/** torch.device('cpu') / torch.device('cuda', 0) -> 'cpu' / 'cuda:0'. */
function device(args: readonly unknown[], at: number): string {
  const [type, index] = args;
  if (typeof type !== 'string' || args.length > 2 || (args.length === 2 && typeof index !== 'number')) throw new PickleCallError(`torch.device takes (type[, index]), got ${args.map(describe).join(', ')}`, at);
  return args.length === 2 ? `${type}:${index}` : type;
}

function bytesToStorage(bytes: Uint8Array, dtype: TorchDtype): Float32Array | Uint16Array {
  const copy = new Uint8Array(bytes); // aligned, and ours
  return dtype === 'f32' ? new Float32Array(copy.buffer, 0, copy.length / 4) : new Uint16Array(copy.buffer, 0, copy.length / 2);
}

function runPickle(bytes: Uint8Array, context: TorchPickleContext, file: string, start = 0): { value: unknown; end: number } {
  return unpickle(bytes, { globals: context.globals, persistentLoad: (pid, at) => context.persistentLoad(pid, at) }, file, start);
}

async function readZip(file: string, classes: readonly string[]): Promise<TorchFile> {
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.openPromise(file, { lazyEntries: true, autoClose: false, strictFileNames: true, validateEntrySizes: true });
  } catch (error) {
    throw new TorchFileError(file, `it starts like a zip archive but is not a readable one (${error instanceof Error ? error.message : String(error)})`);
  }
  try {
    const entries = await listEntries(zip, file);
    const pickles = [...entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
    if (pickles.length !== 1) throw new TorchFileError(file, `a torch.save archive holds one NAME/data.pkl, this one holds ${pickles.length}`);
    const prefix = pickles[0].slice(0, -'data.pkl'.length);
    const outside = [...entries.keys()].filter((name) => !name.startsWith(prefix));
    if (outside.length > 0) throw new TorchFileError(file, `entries outside ${prefix}: ${outside.slice(0, 3).join(', ')}`);
    const byteorder = entries.get(`${prefix}byteorder`);
    if (byteorder) {
      const order = new TextDecoder().decode(await readEntry(zip, byteorder, 16, file)).trim();
      if (order !== 'little') throw new TorchFileError(file, `its storages are ${order}-endian; only little-endian files are read`, 'save it again on a little-endian machine');
    }
    const context = new TorchPickleContext(false, classes);
    const { value: root } = runPickle(await readEntry(zip, entries.get(pickles[0])!, MAX_PICKLE_BYTES, file), context, file);
    for (const storage of context.storages.values()) {
      const entry = entries.get(`${prefix}data/${storage.key}`);
      if (!entry) throw new TorchFileError(file, `the pickle refers to storage ${storage.key}, which the archive lacks (${prefix}data/${storage.key})`);
      const bytes = storage.numel * ELEMENT_BYTES[storage.dtype];
      if (entry.uncompressedSize !== bytes) throw new TorchFileError(file, `storage ${storage.key} has ${entry.uncompressedSize} bytes, its ${storage.numel} ${storage.dtype} elements need ${bytes}`);
      storage.data = bytesToStorage(await readEntry(zip, entry, bytes, file), storage.dtype);
    }
    context.materialize();
    return { file, format: 'zip', root, tensors: context.tensors };
  } finally {
    zip.close();
  }
}

async function listEntries(zip: yauzl.ZipFile, file: string): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const entries = new Map<string, yauzl.Entry>();
    zip.on('entry', (entry: yauzl.Entry) => {
      if (entries.has(entry.fileName)) {
        reject(new TorchFileError(file, `the archive holds ${entry.fileName} twice`));
        return;
      }
      entries.set(entry.fileName, entry);
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', (error: Error) => reject(new TorchFileError(file, `its zip directory is damaged (${error.message})`)));
    zip.readEntry();
  });
}

/** An entry's bytes, refused beyond `limit` before anything is read. */
async function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry, limit: number, file: string): Promise<Uint8Array> {
  if (entry.uncompressedSize > limit) throw new TorchFileError(file, `${entry.fileName} has ${entry.uncompressedSize} bytes, more than the ${limit} it can hold`);
  try {
    const stream = await zip.openReadStreamPromise(entry);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  } catch (error) {
    throw new TorchFileError(file, `cannot read ${entry.fileName} (${error instanceof Error ? error.message : String(error)})`);
  }
}

async function readLegacy(file: string, classes: readonly string[]): Promise<TorchFile> {
  const source = openSource(file);
  try {
    const head = source.read(0, Math.min(source.size, MAX_PICKLE_BYTES));
    const plain = new TorchPickleContext(true, []);
    const context = new TorchPickleContext(true, classes);
    let pos = 0;
    const next = (ctx: TorchPickleContext, what: string): unknown => {
      try {
        const { value, end } = runPickle(head, ctx, file, pos);
        pos = end;
        return value;
      } catch (error) {
        if (error instanceof PickleFormatError && head.length < source.size) {
          throw new TorchFileError(file, `${what} does not end within its first ${MAX_PICKLE_BYTES} bytes (${error.detail})`, 'a module file\'s pickle is far smaller: the file is damaged or not a module file');
        }
        throw error;
      }
    };
    const magic = next(plain, 'the magic number');
    if (magic !== LEGACY_MAGIC) throw new TorchFileError(file, `it starts with a pickle of ${describe(magic)}, not torch.save's magic number`);
    const protocol = next(plain, 'the protocol version');
    if (protocol !== LEGACY_PROTOCOL) throw new TorchFileError(file, `its torch.save protocol version is ${describe(protocol)}, not ${LEGACY_PROTOCOL}`);
    const sysInfo = next(plain, 'the system information');
    if (!(sysInfo instanceof PickleDict) || sysInfo.entries.get('little_endian') !== true) {
      throw new TorchFileError(file, 'it was saved on a big-endian machine (or its system information is missing)', 'save it again on a little-endian machine');
    }
    const root = next(context, 'the main pickle');
    const keys = next(plain, 'the list of storage keys');
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new TorchFileError(file, `its storage keys are ${describe(keys)}, not a list of strings`);
    const listed = new Set(keys as string[]);
    const missing = [...context.storages.keys()].filter((key) => !listed.has(key));
    if (missing.length > 0 || listed.size !== keys.length || listed.size !== context.storages.size) {
      throw new TorchFileError(file, `the storages listed (${keys.length}) are not those the pickle refers to (${context.storages.size}${missing.length ? `; not listed: ${missing.slice(0, 3).join(', ')}` : ''})`);
    }
    let offset = pos;
    for (const key of keys as string[]) {
      const storage = context.storages.get(key)!;
      const count = source.read(offset, 8);
      if (count.length < 8) throw new TorchFileError(file, `it ends before storage ${key} (byte ${offset})`);
      const numel = new DataView(count.buffer, count.byteOffset, 8).getBigInt64(0, true);
      if (numel !== BigInt(storage.numel)) throw new TorchFileError(file, `storage ${key} at byte ${offset} says ${numel} elements, the pickle ${storage.numel}`);
      const bytes = storage.numel * ELEMENT_BYTES[storage.dtype];
      if (offset + 8 + bytes > source.size) throw new TorchFileError(file, `storage ${key} (${bytes} bytes at byte ${offset + 8}) runs past the end of the file (${source.size} bytes)`);
      storage.data = bytesToStorage(source.read(offset + 8, bytes), storage.dtype);
      offset += 8 + bytes;
    }
    if (offset !== source.size) throw new TorchFileError(file, `${source.size - offset} bytes follow the last storage`);
    context.materialize();
    return { file, format: 'legacy', root, tensors: context.tensors };
  } finally {
    source.close();
  }
}

