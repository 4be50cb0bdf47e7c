// What each N-API binding of the CUDA addon expects, read from its source (native/cuda/addon.cc): for every export
// of Init's table, the kind of each argument index, from the reader the binding applies to it (i64 -> an integer,
// need -> a non-null address, flag -> a boolean, ...), so that a test can check calls into the addon without a GPU.
import * as fs from 'node:fs';
import * as path from 'node:path';

export type ArgKind =
  | 'integer' | 'number' | 'address' | 'address?' | 'boolean' | 'dtype' | 'castDtype' | 'maskKind' | 'string'
  | 'integers' | 'typedArray'
  /** Read at an index this reader cannot follow (a computed one): any value passes; the backend must not call it. */
  | 'unknown';

/** Readers of addon.cc and the kind of the argument each reads at its index; structs read several in a row. */
const READERS: Record<string, ArgKind[]> = {
  i64: ['integer'],
  num: ['number'],
  op_code: ['integer'],
  flag: ['boolean'],
  str: ['string'],
  dtype: ['dtype'],
  cast_dtype: ['castDtype'],
  ptr: ['address?'],
  dptr: ['address?'],
  need: ['address'],
  i64_array: ['integers'],
  mask_spec: ['maskKind', 'integer', 'integer', 'integer'],
  conv_dims: ['integer', 'integer', 'integer', 'integer', 'integer', 'integer'],
  pool_dims: ['integer', 'integer', 'integer', 'integer'],
  dense_strides: ['integers'],
  dense_geometry: ['integer', 'integer', 'integer', 'integer', 'integer', 'integer', 'number', 'boolean'],
};

export const ADDON_SOURCE = path.resolve(__dirname, '..', '..', '..', 'native', 'cuda', 'addon.cc');

/** Export name -> the kinds of its arguments, in order (the arity is the length). */
export function cudaBindings(source = fs.readFileSync(ADDON_SOURCE, 'utf8')): Map<string, ArgKind[]> {
  const table = /Napi::Object Init\([^)]*\) \{([\s\S]*?)\n\}/.exec(source);
  if (!table) throw new Error(`no Init table in ${ADDON_SOURCE}`);
  const out = new Map<string, ArgKind[]>();
  for (const [, name, fn] of table[1].matchAll(/\{"(\w+)", (\w+)\}/g)) {
    const start = source.indexOf(`Napi::Value ${fn}(const Napi::CallbackInfo& info) {`);
    if (start < 0) throw new Error(`${name}: no binding ${fn} in ${ADDON_SOURCE}`);
    const body = source.slice(start, source.indexOf('\n}\n', start));
    const kinds: Array<ArgKind | undefined> = [];
    const set = (index: number, kind: ArgKind): void => {
      const known = kinds[index];
      if (known !== undefined && known !== kind) throw new Error(`${name}: argument ${index} read as ${known} and ${kind}`);
      kinds[index] = kind;
    };
    for (const [, reader, index] of body.matchAll(/\b(\w+)(?:<[^>]*>)?\(info, (\d+)/g)) {
      const read = READERS[reader];
      if (!read) throw new Error(`${name}: unknown argument reader ${reader}() in ${fn}`);
      read.forEach((kind, k) => set(Number(index) + k, kind));
    }
    for (const [, index] of body.matchAll(/info\[(\d+)\]\.IsTypedArray\(\)/g)) set(Number(index), 'typedArray');
    out.set(name, Array.from(kinds, (k) => k ?? 'unknown'));
  }
  return out;
}

/** Why `value` is not an argument of `kind`, or null when it is. */
export function argumentMismatch(kind: ArgKind, value: unknown): string | null {
  const isInt = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v);
  const ok: Record<ArgKind, () => boolean> = {
    integer: () => isInt(value),
    number: () => typeof value === 'number' && !Number.isNaN(value),
    address: () => isInt(value) && (value as number) > 0,
    'address?': () => value === null || value === undefined || (isInt(value) && (value as number) >= 0),
    boolean: () => typeof value === 'boolean',
    dtype: () => value === 'f32' || value === 'f16' || value === 'bf16',
    castDtype: () => value === 'f32' || value === 'f16' || value === 'bf16' || value === 'i32',
    maskKind: () => value === 'row' || value === 'column' || value === 'conv',
    string: () => typeof value === 'string',
    integers: () => Array.isArray(value) && value.every(isInt),
    typedArray: () => ArrayBuffer.isView(value) && !(value instanceof DataView),
    unknown: () => true,
  };
  return ok[kind]() ? null : `expected ${kind}, got ${Array.isArray(value) ? `[${String(value)}]` : String(value)}`;
}
