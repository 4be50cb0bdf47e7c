import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { HostArray, HostArrayInput, narrowInt64ToInt32, widenInt32ToInt64 } from '../../src/core/io/dtype';
import {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsSync,
  SafetensorsError,
  SafetensorsReader,
  writeSafetensors,
  writeSafetensorsSync,
} from '../../src/core/io/safetensors';
import { bytesOf, concatBytes, fuzzRandom, makeTempDir } from './helpers';

/**
 * Files written by the reference implementation, copied from the assertions of its own unit tests
 * (huggingface/safetensors, safetensors/src/tensor.rs: test_serialization, test_serialization_forced_alignement,
 * test_empty). The Python library is not installable offline here; these bytes are what its Rust core produces.
 */
const REFERENCE_ATTN_0 = [
  64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70,
  51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111,
  102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0,
  64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
];
const REFERENCE_ATTN0_ALIGNED = [
  72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51,
  50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111,
  102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0,
  128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
];
const REFERENCE_EMPTY = [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32];
const REFERENCE_EMPTY_WITH_METADATA = [
  40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58, 123, 34, 102, 114, 97,
  109, 101, 119, 111, 114, 107, 34, 58, 34, 112, 116, 34, 125, 125, 32, 32, 32, 32, 32,
];

/** A file with one tensor of every dtype, as plain data. */
function everyDtype(): Map<string, HostArray> {
  const tensors = new Map<string, HostArray>();
  tensors.set('f64', { dtype: 'f64', shape: [2, 2], data: new Float64Array([1.5, -2, Math.PI, NaN]) });
  tensors.set('f32', { dtype: 'f32', shape: [3], data: new Float32Array([0.25, -1e30, Infinity]) });
  tensors.set('f16', { dtype: 'f16', shape: [2], data: new Uint16Array([0x3c00, 0xfc00]) });
  tensors.set('bf16', { dtype: 'bf16', shape: [1, 3], data: new Uint16Array([0x3f80, 0x4000, 0x7fc0]) });
  tensors.set('i64', { dtype: 'i64', shape: [2], data: new BigInt64Array([-(2n ** 63n), 2n ** 62n]) });
  tensors.set('i32', { dtype: 'i32', shape: [2, 1, 2], data: new Int32Array([-1, 2, 2 ** 31 - 1, -(2 ** 31)]) });
  tensors.set('i16', { dtype: 'i16', shape: [1], data: new Int16Array([-300]) });
  tensors.set('i8', { dtype: 'i8', shape: [3], data: new Int8Array([-128, 0, 127]) });
  tensors.set('u64', { dtype: 'u64', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) });
  tensors.set('u32', { dtype: 'u32', shape: [1], data: new Uint32Array([4000000000]) });
  tensors.set('u16', { dtype: 'u16', shape: [2], data: new Uint16Array([1, 65535]) });
  tensors.set('u8', { dtype: 'u8', shape: [5], data: new Uint8Array([0, 1, 2, 254, 255]) });
  tensors.set('bool', { dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) });
  tensors.set('scalar', { dtype: 'f32', shape: [], data: new Float32Array([7]) });
  tensors.set('empty', { dtype: 'f32', shape: [0, 3], data: new Float32Array(0) });
  tensors.set('__proto__', { dtype: 'u8', shape: [1], data: new Uint8Array([9]) });
  return tensors;
}

function assertSameArrays(actual: Map<string, HostArray>, expected: Map<string, HostArray>): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [name, want] of expected) {
    const got = actual.get(name)!;
    assert.equal(got.dtype, want.dtype, name);
    assert.deepEqual(got.shape, want.shape, name);
    assert.equal(got.data.constructor, want.data.constructor, name);
    assert.deepEqual(bytesOf(got.data), bytesOf(want.data), name);
  }
}

/** Build a file from a header text and data bytes, with the length written as given (default: correct). */
function craftFile(header: string, data: Uint8Array | number[] = [], length?: bigint): Uint8Array {
  const headerBytes = Buffer.from(header, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length ?? BigInt(headerBytes.byteLength));
  return concatBytes([prefix, headerBytes, Uint8Array.from(data)]);
}

function assertSafetensorsError(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(
    () => decodeSafetensors(bytes, 'crafted.safetensors'),
    (err: unknown) => {
      assert.ok(err instanceof SafetensorsError, `expected SafetensorsError, got ${String(err)}`);
      assert.match(err.message, pattern);
      assert.match(err.message, /crafted\.safetensors/);
      return true;
    },
  );
}

describe('io/safetensors', () => {
  let dir: string;
  let cleanup: () => void;

  beforeEach(() => ({ dir, cleanup } = makeTempDir('safetensors')));
  afterEach(() => cleanup());

  describe('compatibility with the reference implementation', () => {
    const attn = (shape: number[]): HostArrayInput => ({
      dtype: 'f32',
      shape,
      data: new Float32Array([0, 1, 2, 3, 4, 5]),
    });

    it('writes byte-identical files', () => {
      assert.deepEqual([...concatBytes(encodeSafetensors({ 'attn.0': attn([1, 2, 3]) }))], REFERENCE_ATTN_0);
      assert.deepEqual([...concatBytes(encodeSafetensors({ attn0: attn([1, 1, 2, 3]) }))], REFERENCE_ATTN0_ALIGNED);
      assert.deepEqual([...concatBytes(encodeSafetensors({}))], REFERENCE_EMPTY);
      assert.deepEqual([...concatBytes(encodeSafetensors({}, { framework: 'pt' }))], REFERENCE_EMPTY_WITH_METADATA);
    });

    it('reads the reference files', () => {
      const plain = decodeSafetensors(Uint8Array.from(REFERENCE_ATTN_0));
      assert.deepEqual(plain.tensors.get('attn.0')!.shape, [1, 2, 3]);
      assert.deepEqual([...plain.tensors.get('attn.0')!.data], [0, 1, 2, 3, 4, 5]);
      assert.deepEqual(
        [...decodeSafetensors(Uint8Array.from(REFERENCE_ATTN0_ALIGNED)).tensors.get('attn0')!.data],
        [0, 1, 2, 3, 4, 5],
      );
      assert.equal(decodeSafetensors(Uint8Array.from(REFERENCE_EMPTY)).tensors.size, 0);
      assert.deepEqual(decodeSafetensors(Uint8Array.from(REFERENCE_EMPTY_WITH_METADATA)).metadata, { framework: 'pt' });
    });

    it('reads the example of the reference documentation (unpadded header, I32)', () => {
      // safetensors/src/tensor.rs, doc comment of SafeTensors::deserialize
      const file = craftFile('{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}', new Array(16).fill(0));
      assert.equal(file[0], 60); // '<' as in the documentation's b"<\x00..."
      const test = decodeSafetensors(file).tensors.get('test')!;
      assert.equal(test.dtype, 'i32');
      assert.deepEqual([...test.data], [0, 0, 0, 0]);
    });

    it('orders tensors as the reference does: by descending dtype rank, then by name (hand-built expectation)', () => {
      const header = new TextDecoder().decode(
        encodeSafetensors({
          c: { dtype: 'u8', shape: [3], data: new Uint8Array(3) },
          a: { dtype: 'f32', shape: [1], data: new Float32Array(1) },
          d: { dtype: 'bf16', shape: [1], data: new Uint16Array(1) },
          b: { dtype: 'i64', shape: [2], data: new BigInt64Array(2) },
          e: { dtype: 'f32', shape: [1], data: new Float32Array(1) },
        })[0].subarray(8),
      );
      assert.equal(
        header.trimEnd(),
        '{"b":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},' +
          '"a":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},' +
          '"e":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},' +
          '"d":{"dtype":"BF16","shape":[1],"data_offsets":[24,26]},' +
          '"c":{"dtype":"U8","shape":[3],"data_offsets":[26,29]}}',
      );
      assert.equal((header.length + 8) % 8, 0);
    });
  });

  describe('round trips', () => {
    it('round-trips every dtype, scalars, empty tensors and metadata through a file', () => {
      const file = path.join(dir, 'all.safetensors');
      const metadata = { format: 'pt', step: '12', ünïcode: 'välue "quoted"\n' };
      writeSafetensorsSync(file, everyDtype(), metadata);
      const read = readSafetensorsSync(file);
      assertSameArrays(read.tensors, everyDtype());
      assert.deepEqual(read.metadata, metadata);
      assert.deepEqual(fs.readdirSync(dir), ['all.safetensors']);
    });

    it('writes the same bytes for the same tensors in any insertion order', () => {
      const forward = concatBytes(encodeSafetensors(everyDtype(), { b: '2', a: '1' }));
      const backward = concatBytes(encodeSafetensors(new Map([...everyDtype()].reverse()), { a: '1', b: '2' }));
      assert.deepEqual(forward, backward);
    });

    it('has an async writer', async () => {
      const file = path.join(dir, 'async.safetensors');
      await writeSafetensors(file, everyDtype());
      assertSameArrays(readSafetensorsSync(file).tensors, everyDtype());
    });

    it('accepts raw little-endian bytes for any dtype', () => {
      const values = new Float32Array([1, 2, 3]);
      const bytes = concatBytes(encodeSafetensors({ w: { dtype: 'f32', shape: [3], data: bytesOf(values) } }));
      assert.deepEqual([...decodeSafetensors(bytes).tensors.get('w')!.data], [1, 2, 3]);
    });

    it('narrows int64 to int32 with a range check', () => {
      const file = path.join(dir, 'ids.safetensors');
      writeSafetensorsSync(file, { ids: { dtype: 'i64', shape: [3], data: new BigInt64Array([0n, -5n, 8191n]) } });
      const ids = readSafetensorsSync(file).tensors.get('ids')!;
      assert.ok(ids.data instanceof BigInt64Array);
      assert.deepEqual([...narrowInt64ToInt32(ids.data, 'ids')], [0, -5, 8191]);
      assert.throws(
        () => narrowInt64ToInt32(new BigInt64Array([1n, 2n ** 31n]), 'ids'),
        /ids: element 1 is 2147483648/,
      );
      assert.deepEqual([...widenInt32ToInt64(new Int32Array([-1, 7]))], [-1n, 7n]);
    });
  });

  describe('the lazy reader', () => {
    it('validates on open and reads one tensor at a time', () => {
      const file = path.join(dir, 'lazy.safetensors');
      writeSafetensorsSync(file, everyDtype(), { k: 'v' });
      const reader = SafetensorsReader.open(file);
      try {
        assert.equal(reader.names.length, everyDtype().size);
        assert.equal(reader.names[0], 'u64'); // highest rank first
        assert.deepEqual(reader.metadata, { k: 'v' });
        assert.deepEqual(reader.info('i32'), { name: 'i32', dtype: 'i32', shape: [2, 1, 2], byteLength: 16 });
        assert.deepEqual([...reader.read('i32').data], [-1, 2, 2 ** 31 - 1, -(2 ** 31)]);
        assert.deepEqual([...reader.readBytes('u8')], [0, 1, 2, 254, 255]);
        assert.equal(reader.has('nope'), false);
        assert.throws(
          () => reader.read('nope'),
          (err: unknown) =>
            err instanceof SafetensorsError && /"nope": no such tensor.*The file holds: u64/.test(err.message),
        );
      } finally {
        reader.close();
      }
    });

    it('reports a file that shrank after it was opened', () => {
      const file = path.join(dir, 'shrink.safetensors');
      writeSafetensorsSync(file, everyDtype());
      const reader = SafetensorsReader.open(file);
      try {
        fs.truncateSync(file, 100);
        assert.throws(
          () => reader.read('bool'),
          (err: unknown) => err instanceof SafetensorsError && /became shorter/.test(err.message),
        );
      } finally {
        reader.close();
      }
    });

    it('passes fs errors such as ENOENT through', () => {
      assert.throws(() => SafetensorsReader.open(path.join(dir, 'missing.safetensors')), { code: 'ENOENT' });
    });
  });

  describe('writer argument checks', () => {
    it('rejects mismatched data, bad shapes and reserved names', () => {
      assert.throws(() => encodeSafetensors({ w: { dtype: 'f32', shape: [2], data: new Float64Array(2) } }), TypeError);
      assert.throws(
        () => encodeSafetensors({ w: { dtype: 'f32', shape: [3], data: new Float32Array(2) } }),
        RangeError,
      );
      assert.throws(
        () => encodeSafetensors({ w: { dtype: 'f32', shape: [-1], data: new Float32Array(0) } }),
        RangeError,
      );
      assert.throws(
        () => encodeSafetensors({ w: { dtype: 'f32', shape: [1.5], data: new Float32Array(1) } }),
        RangeError,
      );
      assert.throws(
        () => encodeSafetensors({ __metadata__: { dtype: 'u8', shape: [0], data: new Uint8Array(0) } }),
        TypeError,
      );
      assert.throws(
        () => encodeSafetensors({ ['bad\ud800']: { dtype: 'u8', shape: [0], data: new Uint8Array(0) } }),
        TypeError,
      );
      assert.throws(() => encodeSafetensors({}, { k: 1 as unknown as string }), TypeError);
    });
  });

  describe('validation of untrusted files', () => {
    const entry = (dtype: string, shape: unknown, offsets: unknown) =>
      `{"dtype":${JSON.stringify(dtype)},"shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offsets)}}`;

    it('rejects bad length fields', () => {
      assertSafetensorsError(new Uint8Array(0), /shorter than the 8-byte header length/);
      assertSafetensorsError(new Uint8Array(7), /shorter than the 8-byte header length/);
      assertSafetensorsError(craftFile('{}', [], 2n ** 63n), /more than the 100000000 bytes/);
      assertSafetensorsError(craftFile('{}', [], 2n ** 64n - 1n), /more than the 100000000 bytes/);
      assertSafetensorsError(craftFile('{}', [], 100_000_001n), /more than the 100000000 bytes/);
      assertSafetensorsError(craftFile('{}', [], 99_999_999n), /says 99999999 bytes but only 2 bytes follow/);
    });

    it('rejects headers that are not a UTF-8 JSON object', () => {
      const header = Buffer.from('{"a":"\xff"}', 'latin1');
      assertSafetensorsError(
        craftFile(header.toString('latin1')).map((b, i) => (i === 14 ? 0xff : b)),
        /not valid UTF-8/,
      );
      assertSafetensorsError(craftFile(''), /not valid JSON: unexpected end/);
      assertSafetensorsError(craftFile('{"a":'), /not valid JSON/);
      assertSafetensorsError(craftFile('[]'), /JSON but not an object/);
      assertSafetensorsError(craftFile('\ufeff{}'), /not valid JSON/);
      assertSafetensorsError(craftFile('{} x'), /not valid JSON: unexpected text after/);
      assertSafetensorsError(craftFile('['.repeat(100000)), /nesting deeper than 16/);
    });

    it('rejects duplicate names', () => {
      const file = craftFile(`{"w":${entry('U8', [1], [0, 1])},"w":${entry('U8', [1], [1, 2])}}`, [1, 2]);
      assertSafetensorsError(file, /duplicate key "w"/);
    });

    it('rejects unknown and unsupported dtypes', () => {
      assertSafetensorsError(
        craftFile(`{"w":${entry('F8_E4M3', [1], [0, 1])}}`, [0]),
        /tensor "w": dtype "F8_E4M3" is not supported \(supported: BOOL, U8/,
      );
      assertSafetensorsError(
        craftFile(`{"w":${entry('float32', [1], [0, 4])}}`, [0, 0, 0, 0]),
        /dtype "float32" is not supported/,
      );
      assertSafetensorsError(craftFile(`{"w":{"shape":[1],"data_offsets":[0,1]}}`, [0]), /no string "dtype"/);
    });

    it('rejects bad shapes and offsets', () => {
      const data = new Array(16).fill(0);
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', [-1], [0, 16])}}`, data),
        /tensor "w": dimension 0 of the shape is -1/,
      );
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', [1.5], [0, 16])}}`, data),
        /dimension 0 of the shape is 1.5/,
      );
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', ['4'], [0, 16])}}`, data),
        /dimension 0 of the shape is "4"/,
      );
      assertSafetensorsError(craftFile(`{"w":${entry('F32', 4, [0, 16])}}`, data), /no "shape" array/);
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', [2 ** 30, 2 ** 30, 2 ** 30], [0, 16])}}`, data),
        /more than 2\^53 elements/,
      );
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', [3], [0, 16])}}`, data),
        /span 16 bytes but shape \[3\] of F32 needs 12/,
      );
      assertSafetensorsError(craftFile(`{"w":${entry('F32', [4], [0])}}`, data), /not a pair of non-negative integers/);
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', [4], [-16, 0])}}`, data),
        /not a pair of non-negative integers/,
      );
      assertSafetensorsError(craftFile(`{"w":${entry('F32', [0], [16, 0])}}`, data), /ends before it begins/);
      assertSafetensorsError(
        craftFile(`{"w":${entry('F32', [4], [8, 24])}}`, data),
        /beyond the end of the 16-byte data buffer/,
      );
      assertSafetensorsError(craftFile(`{"w":"F32"}`, data), /header entry is not an object/);
    });

    it('rejects a hostile header that claims huge tensors in a small file, without allocating them', () => {
      const huge = 2 ** 50;
      assertSafetensorsError(
        craftFile(`{"w":${entry('U8', [huge], [0, huge])}}`, [0]),
        /beyond the end of the 1-byte data buffer/,
      );
    });

    it('requires the tensors to tile the data buffer exactly', () => {
      const two = (a: [number, number], b: [number, number]) =>
        `{"a":${entry('U8', [a[1] - a[0]], a)},"b":${entry('U8', [b[1] - b[0]], b)}}`;
      assertSafetensorsError(
        craftFile(two([0, 4], [2, 6]), new Array(6).fill(0)),
        /tensor "b": its bytes \[2, 6\) overlaps the previous tensor/,
      );
      assertSafetensorsError(
        craftFile(two([0, 2], [4, 6]), new Array(6).fill(0)),
        /tensor "b": its bytes \[4, 6\) leaves a gap/,
      );
      assertSafetensorsError(craftFile(two([2, 4], [4, 6]), new Array(6).fill(0)), /tensor "a": .*leaves a gap/);
      assertSafetensorsError(
        craftFile(two([0, 2], [2, 4]), new Array(6).fill(0)),
        /cover 4 bytes but the data buffer holds 6: the file has trailing bytes/,
      );
      // out of order in the header, zero-size tensors anywhere: valid
      const valid = craftFile(
        `{"z":${entry('F32', [0], [2, 2])},"b":${entry('U8', [2], [2, 4])},"a":${entry('U8', [2], [0, 2])}}`,
        [1, 2, 3, 4],
      );
      const tensors = decodeSafetensors(valid).tensors;
      assert.deepEqual([...tensors.keys()], ['a', 'z', 'b']);
      assert.deepEqual([...tensors.get('b')!.data], [3, 4]);
    });

    it('rejects bad metadata', () => {
      assertSafetensorsError(craftFile('{"__metadata__":{"a":1}}'), /"__metadata__" entry "a" is not a string/);
      assertSafetensorsError(craftFile('{"__metadata__":[]}'), /"__metadata__" is not an object/);
    });

    it('ignores unknown fields of an entry, as the reference does', () => {
      const file = craftFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":{"x":[1]}}}`, [5]);
      assert.deepEqual([...decodeSafetensors(file).tensors.get('w')!.data], [5]);
    });
  });

  describe('fuzzing', function () {
    this.timeout(60_000);
    const valid = concatBytes(encodeSafetensors(everyDtype(), { format: 'pt' }));

    /** Parsing must either succeed with a consistent result or throw SafetensorsError: nothing else. */
    function parseOrSafetensorsError(bytes: Uint8Array): 'ok' | 'error' {
      try {
        const { tensors } = decodeSafetensors(bytes);
        for (const array of tensors.values()) {
          const count = array.shape.reduce((a, b) => a * b, 1);
          assert.equal(array.data.length, count);
        }
        return 'ok';
      } catch (err) {
        if (err instanceof SafetensorsError) return 'error';
        throw err;
      }
    }

    it('throws SafetensorsError for every truncation of a valid file', () => {
      for (let length = 0; length < valid.byteLength; length++) {
        assert.throws(() => decodeSafetensors(valid.subarray(0, length)), SafetensorsError, `length ${length}`);
      }
    });

    it('throws SafetensorsError for every truncation of a file on disk', () => {
      const file = path.join(dir, 'truncated.safetensors');
      for (let length = 0; length < valid.byteLength; length += 7) {
        fs.writeFileSync(file, valid.subarray(0, length));
        assert.throws(() => readSafetensorsSync(file), SafetensorsError, `length ${length}`);
      }
    });

    it('never fails otherwise on corrupted headers', () => {
      const random = fuzzRandom(1234);
      const headerEnd = 8 + Number(Buffer.from(valid).readBigUInt64LE(0));
      const interesting = Buffer.from('{}[]",:0123456789-. eE\\u"\x00\xff');
      const outcomes = { ok: 0, error: 0 };
      for (let trial = 0; trial < 5000; trial++) {
        const bytes = valid.slice();
        const flips = 1 + Math.floor(random() * 4);
        for (let f = 0; f < flips; f++) {
          const at = Math.floor(random() * headerEnd);
          bytes[at] =
            random() < 0.5 ? Math.floor(random() * 256) : interesting[Math.floor(random() * interesting.length)];
        }
        outcomes[parseOrSafetensorsError(bytes)]++;
      }
      assert.ok(outcomes.error > 4000, `most corruptions must be detected: ${JSON.stringify(outcomes)}`);
    });

    it('never fails otherwise on random bytes', () => {
      const random = fuzzRandom(99);
      for (let trial = 0; trial < 2000; trial++) {
        const bytes = new Uint8Array(Math.floor(random() * 64));
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
        if (bytes.length >= 8) bytes.fill(0, 4, 8); // keep the length plausible now and then
        parseOrSafetensorsError(bytes);
      }
    });
  });
});
