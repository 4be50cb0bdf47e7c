/**
 * A restricted reader of Python pickles (protocol 2, what torch.save writes) that executes nothing.
 *
 * A pickle is a program for a small stack machine whose REDUCE / NEWOBJ / BUILD opcodes call whatever function or
 * class the pickle names (GLOBAL 'posix system' runs a shell command). This reader implements only the opcodes that
 * torch.save's pickles of modules hold, and resolves a GLOBAL only if the caller's policy lists it:
 *   - 'class'     an object made with NEWOBJ(cls, ()) then BUILD(dict) becomes a PickleObject: a plain record of its
 *                 __dict__, never an instance of anything;
 *   - 'function'  REDUCE calls the caller's own TypeScript stand-in with the arguments (e.g. a tensor rebuild);
 *   - 'reference' the global may only be passed around as a value (e.g. a storage type inside a persistent id).
 * collections.OrderedDict and set (`__builtin__.set`) are built in: they make plain containers. Any other global, any
 * other opcode, a REDUCE / NEWOBJ / BUILD on something the policy does not allow, and any malformed or truncated
 * byte is an error naming the byte offset; nothing is looked up by name in JavaScript either.
 * Bounds: lengths are checked against the bytes left, GLOBAL names are short identifiers, strings must be UTF-8.
 */

/** A Python tuple. */
export class PickleTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** Keys a dict may have here (tuple keys never occur in module pickles). */
export type PickleKey = string | number | bigint | boolean | null;

/** A dict or collections.OrderedDict, in insertion order. */
export class PickleDict {
  readonly entries = new Map<PickleKey, unknown>();

  constructor(readonly ordered: boolean) {}
}

/** A set (modules hold `_non_persistent_buffers_set`). */
export class PickleSet {
  constructor(readonly items: readonly unknown[]) {}
}

/** An instance of an allowed class, read as a record: its class's dotted name and its __dict__. */
export class PickleObject {
  readonly state = new Map<string, unknown>();
  built = false;

  constructor(readonly className: string) {}
}

/** A global the policy allows, as a value. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly use: GlobalUse,
  ) {}

  get dotted(): string {
    return `${this.module}.${this.name}`;
  }
}

export type GlobalUse =
  | { readonly kind: 'class' }
  | { readonly kind: 'reference' }
  | { readonly kind: 'function'; readonly call: (args: readonly unknown[], at: number) => unknown };

export interface PicklePolicy {
  /** Allowed globals by dotted name, e.g. 'torch._utils._rebuild_tensor_v2'. */
  readonly globals: ReadonlyMap<string, GlobalUse>;
  /** BINPERSID: what a persistent id stands for; without it a persistent id is refused. */
  readonly persistentLoad?: (pid: unknown, at: number) => unknown;
}

/** A pickle that asks for something this reader never does (a global, an opcode, a call): exit code 4 (input). */
export class PickleRefusedError extends Error {
  override readonly name = 'PickleRefusedError';

  constructor(
    readonly file: string,
    readonly detail: string,
    readonly offset: number,
    readonly hint: string = 'dalle reads only the plain data of torch.save\'d modules it knows and executes nothing from a pickle; a file that asks for more is not what it claims to be: get it again from its original source, and do not load it with PyTorch either unless you trust where it came from',
  ) {
    super(`refusing ${file}: its pickle ${detail} (byte ${offset}); dalle never runs code from a pickle`);
  }
}

/** Bytes that are not a well-formed pickle (truncated, inconsistent): exit code 4 (input). */
export class PickleFormatError extends Error {
  override readonly name = 'PickleFormatError';

  constructor(
    readonly file: string,
    readonly detail: string,
    readonly offset: number,
    readonly hint: string = 'the file is truncated or damaged: download or copy it again',
  ) {
    super(`${file} is not a readable pickle: ${detail} (byte ${offset})`);
  }
}

const OP = {
  MARK: 0x28, // (
  STOP: 0x2e, // .
  BININT: 0x4a, // J
  BININT1: 0x4b, // K
  BININT2: 0x4d, // M
  NONE: 0x4e, // N
  BINPERSID: 0x51, // Q
  REDUCE: 0x52, // R
  BINUNICODE: 0x58, // X
  EMPTY_LIST: 0x5d, // ]
  APPEND: 0x61, // a
  BUILD: 0x62, // b
  GLOBAL: 0x63, // c
  APPENDS: 0x65, // e
  BINGET: 0x68, // h
  LONG_BINGET: 0x6a, // j
  BINPUT: 0x71, // q
  LONG_BINPUT: 0x72, // r
  SETITEM: 0x73, // s
  TUPLE: 0x74, // t
  SETITEMS: 0x75, // u
  EMPTY_DICT: 0x7d, // }
  EMPTY_TUPLE: 0x29, // )
  BINFLOAT: 0x47, // G
  PROTO: 0x80,
  NEWOBJ: 0x81,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
} as const;

const OPCODE_NAMES = new Map<number, string>(Object.entries(OP).map(([name, code]) => [code, name]));

/** The only protocol torch.save writes by default (torch.serialization.DEFAULT_PROTOCOL). */
const PROTOCOL = 2;
/** GLOBAL's module and name are dotted identifiers; anything longer or stranger is refused. */
const GLOBAL_PART = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;
const MAX_GLOBAL_PART = 128;
/** LONG1 integers: the legacy format's magic number is 10 bytes; nothing in a module pickle is larger. */
const MAX_LONG1_BYTES = 16;

const MARK = Symbol('mark');

const BUILTIN_GLOBALS: ReadonlyMap<string, GlobalUse> = new Map<string, GlobalUse>([
  ['collections.OrderedDict', { kind: 'function', call: (args, at) => orderedDict(args, at) }],
  ['__builtin__.set', { kind: 'function', call: (args, at) => pythonSet(args, at) }],
  ['builtins.set', { kind: 'function', call: (args, at) => pythonSet(args, at) }],
]);

/**
 * Thrown by the built-ins and by a policy's stand-ins (calls, persistentLoad) for arguments they do not take; the
 * reader re-throws it as a PickleRefusedError (`refused`) or a PickleFormatError naming the file.
 */
export class PickleCallError extends Error {
  constructor(
    message: string,
    readonly at: number,
    readonly refused = false,
  ) {
    super(message);
  }
}

function orderedDict(args: readonly unknown[], at: number): PickleDict {
  // OrderedDict.__reduce__ gives () and fills it with SETITEMS; a list of pairs is the other form Python accepts.
  const dict = new PickleDict(true);
  if (args.length === 0) return dict;
  if (args.length === 1 && Array.isArray(args[0])) {
    for (const pair of args[0]) {
      const items = pair instanceof PickleTuple ? pair.items : Array.isArray(pair) ? pair : null;
      if (!items || items.length !== 2) throw new PickleCallError('OrderedDict([...]) holds something other than (key, value) pairs', at);
      dict.entries.set(checkKey(items[0], at), items[1]);
    }
    return dict;
  }
  throw new PickleCallError(`OrderedDict takes () or a list of pairs, got ${args.length} arguments`, at);
}

function pythonSet(args: readonly unknown[], at: number): PickleSet {
  if (args.length === 1 && Array.isArray(args[0]) && args[0].every((v) => typeof v === 'string')) return new PickleSet(args[0]);
  throw new PickleCallError('set(...) takes one list of strings here', at);
}

function checkKey(key: unknown, at: number): PickleKey {
  if (key === null || ['string', 'number', 'bigint', 'boolean'].includes(typeof key)) return key as PickleKey;
  throw new PickleCallError(`a dict key is a ${describe(key)}, not a string or number`, at);
}

/** A short description of a value for messages. */
export function describe(value: unknown): string {
  if (value === null) return 'None';
  if (value instanceof PickleTuple) return `tuple of ${value.items.length}`;
  if (value instanceof PickleDict) return value.ordered ? 'OrderedDict' : 'dict';
  if (value instanceof PickleSet) return 'set';
  if (value instanceof PickleObject) return `${value.className} object`;
  if (value instanceof PickleGlobal) return value.dotted;
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '...' : value)}`;
  return typeof value === 'object' ? (value.constructor?.name ?? 'object') : `${typeof value} ${String(value)}`;
}

export interface UnpickleResult {
  readonly value: unknown;
  /** Offset just past STOP: where the next pickle of a stream starts. */
  readonly end: number;
}

/**
 * Reads one pickle from `bytes` starting at `start`. `file` names the source in errors. Throws PickleRefusedError
 * for anything outside the policy and PickleFormatError for malformed bytes.
 */
export function unpickle(bytes: Uint8Array, policy: PicklePolicy, file: string, start = 0): UnpickleResult {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = start;
  let at = start; // the offset of the opcode being run

  const refuse = (detail: string): never => {
    throw new PickleRefusedError(file, detail, at);
  };
  const malformed = (detail: string): never => {
    throw new PickleFormatError(file, detail, at);
  };
  const need = (n: number): number => {
    if (n > bytes.length - pos) malformed(`it ends inside ${OPCODE_NAMES.get(bytes[at]) ?? 'an opcode'} (${n} bytes needed, ${bytes.length - pos} left)`);
    const p = pos;
    pos += n;
    return p;
  };
  const pop = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) malformed('an opcode takes a value from an empty stack');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) malformed('an opcode reads the top of an empty stack');
    return stack[stack.length - 1];
  };
  /** Pops back to the last MARK, returning what was above it. */
  const popMark = (): unknown[] => {
    const mark = stack.lastIndexOf(MARK);
    if (mark < 0) malformed('an opcode needs a MARK that is not there');
    const items = stack.splice(mark);
    items.shift();
    return items;
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0 || end - pos > MAX_GLOBAL_PART) malformed('a GLOBAL name has no end of line within 128 bytes');
    const text = String.fromCharCode(...bytes.subarray(pos, end));
    pos = end + 1;
    return text;
  };
  const call = (fn: (args: readonly unknown[], at: number) => unknown, args: readonly unknown[]): unknown => {
    try {
      return fn(args, at);
    } catch (error) {
      if (error instanceof PickleCallError) {
        throw error.refused ? new PickleRefusedError(file, error.message, error.at) : new PickleFormatError(file, error.message, error.at);
      }
      throw error;
    }
  };
  const setItems = (target: unknown, items: unknown[]): void => {
    if (!(target instanceof PickleDict)) refuse(`sets items on a ${describe(target)}, which is not a dict`);
    if (items.length % 2 !== 0) malformed('SETITEMS has a key without a value');
    for (let i = 0; i < items.length; i += 2) (target as PickleDict).entries.set(call((args) => checkKey(args[0], at), [items[i]]) as PickleKey, items[i + 1]);
  };
  const append = (target: unknown, items: unknown[]): void => {
    if (!Array.isArray(target)) refuse(`appends to a ${describe(target)}, which is not a list`);
    (target as unknown[]).push(...items);
  };

  while (true) {
    at = pos;
    const op = bytes[need(1)];
    switch (op) {
      case OP.PROTO: {
        const protocol = bytes[need(1)];
        if (protocol !== PROTOCOL) refuse(`uses pickle protocol ${protocol}; torch.save writes protocol ${PROTOCOL}, the only one read here`);
        break;
      }
      case OP.STOP:
        return { value: pop(), end: pos };
      case OP.MARK:
        stack.push(MARK);
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT:
        stack.push(view.getInt32(need(4), true));
        break;
      case OP.BININT1:
        stack.push(bytes[need(1)]);
        break;
      case OP.BININT2:
        stack.push(view.getUint16(need(2), true));
        break;
      case OP.LONG1: {
        const n = bytes[need(1)];
        if (n > MAX_LONG1_BYTES) refuse(`holds a ${n}-byte integer; nothing in a module file is larger than ${MAX_LONG1_BYTES} bytes`);
        const p = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[p + i]);
        if (n > 0 && bytes[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n); // two's complement
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case OP.BINFLOAT:
        stack.push(view.getFloat64(need(8), false)); // big-endian, as pickle writes it
        break;
      case OP.BINUNICODE: {
        const n = view.getUint32(need(4), true);
        const p = need(n);
        try {
          stack.push(utf8.decode(bytes.subarray(p, p + n)));
        } catch {
          malformed('a string is not UTF-8');
        }
        break;
      }
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.EMPTY_DICT:
        stack.push(new PickleDict(false));
        break;
      case OP.EMPTY_TUPLE:
        stack.push(new PickleTuple([]));
        break;
      case OP.TUPLE:
        stack.push(new PickleTuple(popMark()));
        break;
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const n = op - OP.TUPLE1 + 1;
        const items: unknown[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(new PickleTuple(items));
        break;
      }
      case OP.APPEND: {
        const item = pop();
        append(top(), [item]);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        append(top(), items);
        break;
      }
      case OP.SETITEM: {
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case OP.BINPUT:
        memo.set(bytes[need(1)], top());
        break;
      case OP.LONG_BINPUT:
        memo.set(view.getUint32(need(4), true), top());
        break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const key = op === OP.BINGET ? bytes[need(1)] : view.getUint32(need(4), true);
        if (!memo.has(key)) malformed(`it reads memo entry ${key}, which was never stored`);
        stack.push(memo.get(key));
        break;
      }
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        const dotted = `${module}.${name}`;
        if (!GLOBAL_PART.test(module) || !GLOBAL_PART.test(name)) refuse(`names a global ${JSON.stringify(dotted)} that is not a Python name`);
        const use = policy.globals.get(dotted) ?? BUILTIN_GLOBALS.get(dotted);
        if (!use) refuse(`imports ${dotted}, which this file type never holds`);
        stack.push(new PickleGlobal(module, name, use!));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PickleGlobal) || fn.use.kind !== 'function') refuse(`calls ${describe(fn)}, which it may not call`);
        if (!(args instanceof PickleTuple)) malformed(`REDUCE's arguments are a ${describe(args)}, not a tuple`);
        const use = (fn as PickleGlobal).use as Extract<GlobalUse, { kind: 'function' }>;
        stack.push(call(use.call, (args as PickleTuple).items));
        break;
      }
      case OP.NEWOBJ: {
        const args = pop();
        const cls = pop();
        if (!(cls instanceof PickleGlobal) || cls.use.kind !== 'class') refuse(`creates a ${describe(cls)}, which it may not create`);
        if (!(args instanceof PickleTuple) || args.items.length !== 0) refuse(`passes arguments (${describe(args)}) to ${(cls as PickleGlobal).dotted}.__new__`);
        stack.push(new PickleObject((cls as PickleGlobal).dotted));
        break;
      }
      case OP.BUILD: {
        const state = pop();
        const target = top();
        if (!(target instanceof PickleObject)) refuse(`sets the state of a ${describe(target)}`);
        const object = target as PickleObject;
        if (object.built) refuse(`sets the state of a ${object.className} twice`);
        if (!(state instanceof PickleDict)) refuse(`gives a ${object.className} a ${describe(state)} as its state, not a dict`);
        for (const [key, value] of (state as PickleDict).entries) {
          if (typeof key !== 'string') refuse(`gives a ${object.className} an attribute named by a ${typeof key}`);
          object.state.set(key as string, value);
        }
        object.built = true;
        break;
      }
      case OP.BINPERSID: {
        const pid = pop();
        if (!policy.persistentLoad) refuse('refers to an outside object (a persistent id), which this file type never does');
        stack.push(call((args) => policy.persistentLoad!(args[0], at), [pid]));
        break;
      }
      default:
        refuse(`uses opcode 0x${op.toString(16).padStart(2, '0')} (${JSON.stringify(String.fromCharCode(op))}), which torch.save's module pickles never hold`);
    }
  }
}
