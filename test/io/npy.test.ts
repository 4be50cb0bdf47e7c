import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { HostArrayInput } from '../../src/core/io/dtype';
import {
  decodeNpy,
  encodeNpy,
  NpyError,
  readNpyHeaderSync,
  readNpySync,
  writeNpy,
  writeNpySync,
} from '../../src/core/io/npy';
import { bytesOf, concatBytes, fuzzRandom, makeTempDir } from './helpers';

/** Header dict text -> a complete .npy 1.0 file with `data` after it (no alignment: readers must not need it). */
function craftNpy(dict: string, data: number[] | Uint8Array = [], version = 1): Uint8Array {
  const header = Buffer.from(dict + '\n', 'latin1');
  const lengthBytes = version === 1 ? 2 : 4;
  const prefix = Buffer.alloc(8 + lengthBytes);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(prefix);
  if (version === 1) prefix.writeUInt16LE(header.length, 8);
  else prefix.writeUInt32LE(header.length, 8);
  return concatBytes([prefix, header, Uint8Array.from(data)]);
}

function assertNpyError(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(
    () => decodeNpy(bytes, 'crafted.npy'),
    (err: unknown) => {
      assert.ok(err instanceof NpyError, `expected NpyError, got ${String(err)}`);
      assert.match(err.message, pattern);
      assert.match(err.message, /crafted\.npy/);
      return true;
    },
  );
}

const arrays: Record<string, HostArrayInput> = {
  f64: { dtype: 'f64', shape: [2], data: new Float64Array([Math.PI, -0]) },
  f32: { dtype: 'f32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
  f16: { dtype: 'f16', shape: [1], data: new Uint16Array([0x3c00]) },
  i64: { dtype: 'i64', shape: [2], data: new BigInt64Array([-(2n ** 40n), 7n]) },
  i32: { dtype: 'i32', shape: [2, 2, 2], data: new Int32Array([0, 1, 8191, -1, 5, 6, 7, 8]) },
  i16: { dtype: 'i16', shape: [1], data: new Int16Array([-2]) },
  i8: { dtype: 'i8', shape: [2], data: new Int8Array([-128, 127]) },
  u64: { dtype: 'u64', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
  u32: { dtype: 'u32', shape: [1], data: new Uint32Array([4e9]) },
  u16: { dtype: 'u16', shape: [1], data: new Uint16Array([65535]) },
  u8: { dtype: 'u8', shape: [4], data: new Uint8Array([0, 1, 128, 255]) },
  bool: { dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) },
  scalar: { dtype: 'f32', shape: [], data: new Float32Array([2.5]) },
  empty: { dtype: 'f32', shape: [0, 3], data: new Float32Array(0) },
  wide: { dtype: 'u8', shape: [1000000, 0], data: new Uint8Array(0) },
};

describe('io/npy', () => {
  let dir: string;
  let cleanup: () => void;

  beforeEach(() => ({ dir, cleanup } = makeTempDir('npy')));
  afterEach(() => cleanup());

  describe('round trips', () => {
    it('round-trips every dtype through files, sync and async', async () => {
      for (const [name, array] of Object.entries(arrays)) {
        const file = path.join(dir, `${name}.npy`);
        if (name.length % 2 === 0) writeNpySync(file, array);
        else await writeNpy(file, array);
        const read = readNpySync(file);
        assert.equal(read.dtype, array.dtype, name);
        assert.deepEqual(read.shape, array.shape, name);
        assert.deepEqual(bytesOf(read.data), bytesOf(array.data), name);
        const header = readNpyHeaderSync(file);
        assert.equal(header.dataOffset % 64, 0, `${name}: data must start at a multiple of 64`);
        assert.equal(header.version, 1);
      }
      assert.equal(fs.readdirSync(dir).filter((f) => f.includes('.tmp-')).length, 0);
    });

    it("writes NumPy's exact header text", () => {
      const header = Buffer.from(encodeNpy(arrays.i32)[0]).toString('latin1');
      assert.equal(header.slice(0, 10), '\x93NUMPY\x01\x00\x76\x00');
      assert.equal(header.length, 128);
      const dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2, 2), }";
      // 20 spare spaces for growth of the first axis (21 digits minus 1), then padding to 128 bytes, then '\n'
      assert.equal(header.slice(10), `${dict}${' '.repeat(128 - 10 - dict.length - 1)}\n`);
      assert.ok(128 - 10 - dict.length - 1 >= 20);
      const scalar = Buffer.from(encodeNpy(arrays.scalar)[0]).toString('latin1');
      assert.equal(scalar.slice(10).trimEnd(), "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
      const vector = Buffer.from(encodeNpy(arrays.u8)[0]).toString('latin1');
      assert.match(vector, /'descr': '\|u1', 'fortran_order': False, 'shape': \(4,\), }/);
    });

    it('refuses bfloat16, which NumPy does not have', () => {
      assert.throws(
        () => encodeNpy({ dtype: 'bf16', shape: [1], data: new Uint16Array(1) }),
        /NumPy has no such dtype/,
      );
    });

    it('transposes Fortran-ordered data into C order', () => {
      // shape (2, 3), column-major: columns [1, 4], [2, 5], [3, 6]
      const file = craftNpy(
        "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }",
        bytesOf(new Int32Array([1, 4, 2, 5, 3, 6])),
      );
      const array = decodeNpy(file);
      assert.deepEqual(array.shape, [2, 3]);
      assert.deepEqual([...array.data], [1, 2, 3, 4, 5, 6]);
      const cube = new Float64Array(24).map((_, i) => i); // F-order (2, 3, 4): element (i, j, k) at i + 2j + 6k
      const fromFortran = decodeNpy(
        craftNpy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 4)}", bytesOf(cube)),
      );
      const expected: number[] = [];
      for (let i = 0; i < 2; i++)
        for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) expected.push(i + 2 * j + 6 * k);
      assert.deepEqual([...fromFortran.data], expected);
    });

    it('reads versions 2.0 and 3.0, Python 2 long integers and double quotes', () => {
      const data = bytesOf(new Int32Array([1, 2, 3]));
      for (const version of [2, 3]) {
        assert.deepEqual(
          [...decodeNpy(craftNpy("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", data, version)).data],
          [1, 2, 3],
        );
      }
      assert.deepEqual(
        decodeNpy(craftNpy("{'descr': '<i4', 'fortran_order': False, 'shape': (3L,), }", data)).shape,
        [3],
      );
      assert.deepEqual(decodeNpy(craftNpy('{"shape": (3,), "fortran_order": False, "descr": "<i4"}', data)).shape, [3]);
    });
  });

  describe('validation of untrusted files', () => {
    const dict = (descr: string, shape: string, fortran = 'False') =>
      `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;

    it('rejects bad magic, versions and header lengths', () => {
      assertNpyError(new Uint8Array(0), /does not start with the \.npy magic/);
      assertNpyError(
        Buffer.from('PK\x03\x04 a zip file'),
        /does not start with the \.npy magic.*\.npz archives are zip files/,
      );
      assertNpyError(craftNpy(dict('<f4', '()'), [0, 0, 0, 0], 4), /format version 4\.0/);
      const file = craftNpy(dict('<f4', '()'), [0, 0, 0, 0]);
      file[9] = 0xff; // header length 0xff76
      assertNpyError(file, /header length field says \d+ bytes but only \d+ follow/);
      assertNpyError(
        craftNpy(dict('<f4', '()') + ' '.repeat(10000), [0, 0, 0, 0]),
        /more than NumPy's default limit of 10000/,
      );
    });

    it('rejects headers that are not the expected dict', () => {
      assertNpyError(
        craftNpy("{'descr': '<f4', 'fortran_order': False}"),
        /keys \[descr, fortran_order\], not exactly/,
      );
      assertNpyError(
        craftNpy(dict('<f4', '(1,)').replace('}', "'extra': 1}"), [0, 0, 0, 0]),
        /keys \[descr, extra, fortran_order, shape\]/,
      );
      assertNpyError(craftNpy(dict('<f4', '(3)'), [0, 0, 0, 0]), /'shape' is not a tuple/);
      assertNpyError(craftNpy(dict('<f4', '(-1,)')), /'shape' is invalid: dimension 0 of the shape is -1/);
      assertNpyError(craftNpy(dict('<f4', '(1,)', '0'), [0, 0, 0, 0]), /'fortran_order' is not True or False/);
      assertNpyError(
        craftNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'descr': '<f4'}"),
        /duplicate key "descr"/,
      );
      assertNpyError(
        craftNpy("{'descr': '<f4' 'fortran_order': False}"),
        /not a valid dict literal: expected ',' or '}'/,
      );
      assertNpyError(craftNpy('[1, 2]'), /the header is not a dict/);
      assertNpyError(craftNpy("{'descr': __import__('os')}"), /not a valid dict literal: unexpected character "_"/);
      assertNpyError(craftNpy("{'a': " + '('.repeat(40)), /nesting deeper than 16/);
    });

    it('rejects unsupported dtypes with advice', () => {
      assertNpyError(craftNpy(dict('>f4', '(1,)'), [0, 0, 0, 0]), /big-endian \(>f4\).*newbyteorder/);
      assertNpyError(craftNpy(dict('|O', '(1,)'), new Array(8).fill(0)), /object array \(pickled Python objects\)/);
      assertNpyError(
        craftNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", [0, 0, 0, 0]),
        /structured dtype/,
      );
      assertNpyError(craftNpy(dict('<c8', '(1,)'), new Array(8).fill(0)), /dtype "<c8" is not supported.*astype/);
      assertNpyError(craftNpy(dict('<U2', '(1,)'), new Array(8).fill(0)), /dtype "<U2" is not supported/);
      // byte order does not matter for one-byte types
      assert.deepEqual([...decodeNpy(craftNpy(dict('>u1', '(2,)'), [3, 4])).data], [3, 4]);
    });

    it('requires exactly the data the shape needs', () => {
      assertNpyError(
        craftNpy(dict('<f4', '(2,)'), [0, 0, 0, 0]),
        /needs 8 data bytes but 4 follow the header: the file is truncated/,
      );
      assertNpyError(craftNpy(dict('<f4', '(1,)'), new Array(5).fill(0)), /the file has trailing bytes/);
      assertNpyError(craftNpy(dict('<f4', `(${2 ** 40}, ${2 ** 20})`)), /more than 2\^53 elements/);
      assertNpyError(craftNpy(dict('<f4', `(${2 ** 50},)`)), /the file is truncated/);
    });

    it('passes fs errors such as ENOENT through', () => {
      assert.throws(() => readNpySync(path.join(dir, 'missing.npy')), { code: 'ENOENT' });
    });
  });

  describe('fuzzing', function () {
    this.timeout(60_000);
    const valid = concatBytes(encodeNpy(arrays.i32));

    function parseOrNpyError(bytes: Uint8Array): 'ok' | 'error' {
      try {
        const array = decodeNpy(bytes);
        assert.equal(
          array.data.length,
          array.shape.reduce((a, b) => a * b, 1),
        );
        return 'ok';
      } catch (err) {
        if (err instanceof NpyError) return 'error';
        throw err;
      }
    }

    it('throws NpyError for every truncation of a valid file, in memory and on disk', () => {
      const file = path.join(dir, 'truncated.npy');
      for (let length = 0; length < valid.byteLength; length++) {
        assert.throws(() => decodeNpy(valid.subarray(0, length)), NpyError, `length ${length}`);
        fs.writeFileSync(file, valid.subarray(0, length));
        assert.throws(() => readNpySync(file), NpyError, `file length ${length}`);
      }
    });

    it('never fails otherwise on corrupted headers or random bytes', () => {
      const random = fuzzRandom(4321);
      const interesting = Buffer.from("{}()[]',:0123456789-L TrueFalse<>|fiub\\\n\x00\xff");
      const outcomes = { ok: 0, error: 0 };
      for (let trial = 0; trial < 5000; trial++) {
        const bytes = valid.slice();
        const flips = 1 + Math.floor(random() * 4);
        for (let f = 0; f < flips; f++) {
          const at = Math.floor(random() * 128);
          bytes[at] =
            random() < 0.5 ? Math.floor(random() * 256) : interesting[Math.floor(random() * interesting.length)];
        }
        outcomes[parseOrNpyError(bytes)]++;
      }
      assert.ok(outcomes.error > 2500, `most corruptions must be detected: ${JSON.stringify(outcomes)}`);
      for (let trial = 0; trial < 2000; trial++) {
        const bytes = new Uint8Array(Math.floor(random() * 80));
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
        if (bytes.length > 8) bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
        parseOrNpyError(bytes);
      }
    });
  });

  describe('interoperability with NumPy', function () {
    this.timeout(60_000);
    let numpyDir: string;

    /** Each fixture: a .npy written by numpy.save (or write_array) and its C-order little-endian bytes in .bin. */
    const FIXTURE_SCRIPT = String.raw`
import json, sys, numpy as np
from numpy.lib import format as npformat
out = sys.argv[1]
cases = {
  'f4_2x3': np.arange(6, dtype='<f4').reshape(2, 3) * 0.5 - 1,
  'f2': np.linspace(-2, 2, 7).astype('<f2'),
  'f8_scalar': np.array(3.25),
  'i4_grid': np.arange(2 * 4 * 4, dtype='<i4').reshape(2, 4, 4) - 5,
  'i8': np.array([-2**40, 0, 2**40], dtype='<i8'),
  'i2': np.array([-300, 300], dtype='<i2'),
  'i1': np.array([-128, 127], dtype='i1'),
  'u1': np.arange(256, dtype=np.uint8),
  'u2': np.array([65535], dtype='<u2'),
  'u4': np.array([4000000000], dtype='<u4'),
  'u8': np.array([2**64 - 1], dtype='<u8'),
  'b1': np.array([True, False, True]),
  'empty': np.zeros((0, 3), '<f4'),
  'wide': np.zeros((1000000, 0), 'u1'),
  'fortran_f8': np.asfortranarray(np.arange(24, dtype='<f8').reshape(2, 3, 4)),
  'fortran_u1': np.asfortranarray(np.arange(6, dtype='u1').reshape(2, 3)),
}
for name, array in cases.items():
  np.save(f'{out}/{name}.npy', array)
  np.ascontiguousarray(array).tobytes(order='C')
  open(f'{out}/{name}.bin', 'wb').write(np.ascontiguousarray(array).tobytes(order='C'))
for version in [(2, 0), (3, 0)]:
  array = np.arange(4, dtype='<i4')
  with open(f'{out}/v{version[0]}.npy', 'wb') as f:
    npformat.write_array(f, array, version=version)
  open(f'{out}/v{version[0]}.bin', 'wb').write(array.tobytes())
np.save(f'{out}/bad_big_endian.npy', np.arange(3, dtype='>f4'))
np.save(f'{out}/bad_object.npy', np.array([1, 'a'], dtype=object), allow_pickle=True)
np.save(f'{out}/bad_structured.npy', np.zeros(2, dtype=[('a', '<f4'), ('b', '<i4')]))
np.save(f'{out}/bad_complex.npy', np.zeros(2, 'c8'))
np.save(f'{out}/bad_unicode.npy', np.array(['ab']))
print(json.dumps({'numpy': np.__version__}))
`;

    /** Loads every .npy in a directory and prints dtype.str, shape and the C-order bytes of each. */
    const LOAD_SCRIPT = String.raw`
import json, os, sys, numpy as np
result = {}
for name in sorted(os.listdir(sys.argv[1])):
  a = np.load(os.path.join(sys.argv[1], name))
  result[name] = {'descr': a.dtype.str, 'shape': list(a.shape), 'hex': np.ascontiguousarray(a).tobytes().hex()}
print(json.dumps(result))
`;

    before(function () {
      const probe = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
      if (probe.status !== 0) {
        console.log('      (numpy is not importable by python3: skipping the NumPy interoperability tests)');
        this.skip();
      }
      numpyDir = makeTempDir('numpy-fixtures').dir;
      const run = spawnSync('python3', ['-c', FIXTURE_SCRIPT, numpyDir], { encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
    });

    after(() => {
      if (numpyDir) fs.rmSync(numpyDir, { recursive: true, force: true });
    });

    const readable = [
      'f4_2x3',
      'f2',
      'f8_scalar',
      'i4_grid',
      'i8',
      'i2',
      'i1',
      'u1',
      'u2',
      'u4',
      'u8',
      'b1',
      'empty',
      'wide',
      'fortran_f8',
      'fortran_u1',
      'v2',
      'v3',
    ];

    it('reads what NumPy writes, including Fortran order and format versions 2.0 and 3.0', () => {
      for (const name of readable) {
        const array = readNpySync(path.join(numpyDir, `${name}.npy`));
        assert.deepEqual(
          bytesOf(array.data),
          new Uint8Array(fs.readFileSync(path.join(numpyDir, `${name}.bin`))),
          name,
        );
      }
      assert.deepEqual(readNpySync(path.join(numpyDir, 'i4_grid.npy')).shape, [2, 4, 4]);
      assert.deepEqual(readNpySync(path.join(numpyDir, 'f8_scalar.npy')).shape, []);
      assert.equal(readNpySync(path.join(numpyDir, 'b1.npy')).dtype, 'bool');
      assert.equal(readNpySync(path.join(numpyDir, 'f2.npy')).dtype, 'f16');
    });

    it('writes files byte-identical to numpy.save', () => {
      for (const name of readable.filter((n) => !n.startsWith('fortran') && !n.startsWith('v'))) {
        const original = new Uint8Array(fs.readFileSync(path.join(numpyDir, `${name}.npy`)));
        assert.deepEqual(concatBytes(encodeNpy(decodeNpy(original))), original, name);
      }
    });

    it('writes files that NumPy reads', () => {
      const ours = path.join(dir, 'ours');
      fs.mkdirSync(ours);
      for (const [name, array] of Object.entries(arrays)) writeNpySync(path.join(ours, `${name}.npy`), array);
      const run = spawnSync('python3', ['-c', LOAD_SCRIPT, ours], { encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      const loaded = JSON.parse(run.stdout) as Record<string, { descr: string; shape: number[]; hex: string }>;
      const descr: Record<string, string> = {
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
      for (const [name, array] of Object.entries(arrays)) {
        const got = loaded[`${name}.npy`];
        assert.equal(got.descr, descr[array.dtype], name);
        assert.deepEqual(got.shape, array.shape, name);
        assert.equal(got.hex, Buffer.from(bytesOf(array.data)).toString('hex'), name);
      }
    });

    it('rejects what it does not support, with advice', () => {
      const expectations: [string, RegExp][] = [
        ['bad_big_endian', /big-endian/],
        ['bad_object', /object array/],
        ['bad_structured', /structured dtype/],
        ['bad_complex', /"<c8" is not supported/],
        ['bad_unicode', /"<U2" is not supported/],
      ];
      for (const [name, pattern] of expectations) {
        assert.throws(
          () => readNpySync(path.join(numpyDir, `${name}.npy`)),
          (err: unknown) => err instanceof NpyError && pattern.test(err.message),
          name,
        );
      }
    });
  });
});
