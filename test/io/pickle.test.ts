/**
 * The restricted pickle reader: reads the protocol-2 opcodes torch.save's module pickles hold, and refuses everything
 * else (a global not allowed, a call of a class, an opcode of another protocol) with the byte offset, running nothing.
 */
import assert from 'node:assert/strict';
import { GlobalUse, PickleDict, PickleFormatError, PickleObject, PickleRefusedError, PickleTuple, unpickle } from '../../src/core/io/pickle';

/** A pickle assembled from opcodes: strings are written as latin-1 bytes, numbers as single bytes. */
function bytes(...parts: Array<string | number | number[]>): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === 'string') for (const ch of p) out.push(ch.charCodeAt(0));
    else if (typeof p === 'number') out.push(p);
    else out.push(...p);
  }
  return Uint8Array.from(out);
}

/** BINUNICODE of an ASCII string. */
function str(s: string): number[] {
  return [0x58, s.length, 0, 0, 0, ...[...s].map((c) => c.charCodeAt(0))];
}

const NONE_ALLOWED = { globals: new Map<string, GlobalUse>() };

describe('io/pickle: restricted unpickler', () => {
  it('reads containers, numbers and strings of protocol 2 with the memo', () => {
    // {'a': (1, 300, -2, 2.5, None, True), 'b': [memo 0 = 'x', memo 0], 'c': 2**40}
    const data = bytes(0x80, 2, '}', '(', str('a'), '(', 'K', 1, 'M', [0x2c, 0x01], 'J', [0xfe, 0xff, 0xff, 0xff], 'G', [0x40, 0x04, 0, 0, 0, 0, 0, 0], 'N', 0x88, 't',
      str('b'), ']', '(', str('x'), 'q', 0, 'h', 0, 'e', str('c'), 0x8a, 6, [0, 0, 0, 0, 0, 1], 'u', '.');
    const { value, end } = unpickle(data, NONE_ALLOWED, 'mem');
    assert.equal(end, data.length);
    assert.ok(value instanceof PickleDict);
    const a = value.entries.get('a');
    assert.ok(a instanceof PickleTuple);
    assert.deepEqual(a.items, [1, 300, -2, 2.5, null, true]);
    assert.deepEqual(value.entries.get('b'), ['x', 'x']);
    assert.equal(value.entries.get('c'), 2 ** 40);
  });

  it('builds allowed classes as records, and OrderedDict and set as containers', () => {
    // NEWOBJ(Conv2d, ()) then BUILD({'kw': 3, '_modules': OrderedDict(), '_set': set([])})
    const data = bytes(0x80, 2, 'c', 'dall_e.utils\nConv2d\n', ')', 0x81, '}', '(', str('kw'), 'K', 3, str('_modules'), 'c', 'collections\nOrderedDict\n', ')', 'R',
      str('_set'), 'c', '__builtin__\nset\n', ']', 0x85, 'R', 'u', 'b', '.');
    const { value } = unpickle(data, { globals: new Map<string, GlobalUse>([['dall_e.utils.Conv2d', { kind: 'class' }]]) }, 'mem');
    assert.ok(value instanceof PickleObject);
    assert.equal(value.className, 'dall_e.utils.Conv2d');
    assert.equal(value.state.get('kw'), 3);
    assert.ok(value.state.get('_modules') instanceof PickleDict && (value.state.get('_modules') as PickleDict).ordered);
  });

  it('refuses a global it was not given, naming it and its offset, before anything is called', () => {
    // What `pickle.dumps` of an object whose __reduce__ returns (os.system, ('...',)) holds.
    const data = bytes(0x80, 2, 'c', 'posix\nsystem\n', str('echo ran'), 0x85, 'R', '.');
    assert.throws(() => unpickle(data, NONE_ALLOWED, 'evil.pkl'), (e: unknown) => {
      assert.ok(e instanceof PickleRefusedError);
      assert.match(e.message, /refusing evil\.pkl: its pickle imports posix\.system, which this file type never holds \(byte 2\); dalle never runs code from a pickle/);
      return true;
    });
  });

  it('refuses builtins even when spelled as Python 3 modules (eval, getattr)', () => {
    for (const global of ['builtins\neval\n', '__builtin__\ngetattr\n', 'torch\nload\n']) {
      assert.throws(() => unpickle(bytes(0x80, 2, 'c', global, '.'), NONE_ALLOWED, 'x'), PickleRefusedError);
    }
  });

  it('refuses calling a class (REDUCE), NEWOBJ with arguments, and BUILD on a container', () => {
    const cls = { globals: new Map<string, GlobalUse>([['m.C', { kind: 'class' }]]) };
    assert.throws(() => unpickle(bytes(0x80, 2, 'c', 'm\nC\n', ')', 'R', '.'), cls, 'x'), /calls m\.C, which it may not call/);
    assert.throws(() => unpickle(bytes(0x80, 2, 'c', 'm\nC\n', 'K', 1, 0x85, 0x81, '.'), cls, 'x'), /passes arguments .* to m\.C\.__new__/);
    assert.throws(() => unpickle(bytes(0x80, 2, ']', '}', 'b', '.'), cls, 'x'), /sets the state of a list/);
  });

  it('refuses opcodes torch.save never writes: other protocols, INST, persistent ids without a loader', () => {
    assert.throws(() => unpickle(bytes(0x80, 4, 0x95, [8, 0, 0, 0, 0, 0, 0, 0], 'N', '.'), NONE_ALLOWED, 'x'), /uses pickle protocol 4/);
    assert.throws(() => unpickle(bytes(0x80, 2, 'i', 'os\nsystem\n', '.'), NONE_ALLOWED, 'x'), (e: unknown) => e instanceof PickleRefusedError && /opcode 0x69/.test(e.message));
    assert.throws(() => unpickle(bytes(0x80, 2, 'N', 'Q', '.'), NONE_ALLOWED, 'x'), /persistent id/);
  });

  it('reports malformed bytes as format errors: truncated, an unknown memo entry, an empty stack', () => {
    assert.throws(() => unpickle(bytes(0x80, 2, 0x58, 200, 0, 0, 0, 'ab'), NONE_ALLOWED, 'cut.pkl'), (e: unknown) => e instanceof PickleFormatError && /ends inside BINUNICODE \(200 bytes needed, 2 left\)/.test(e.message));
    assert.throws(() => unpickle(bytes(0x80, 2, 'h', 7, '.'), NONE_ALLOWED, 'x'), /memo entry 7, which was never stored/);
    assert.throws(() => unpickle(bytes(0x80, 2, '.'), NONE_ALLOWED, 'x'), /empty stack/);
    assert.throws(() => unpickle(bytes(0x80, 2), NONE_ALLOWED, 'x'), PickleFormatError);
  });
});
