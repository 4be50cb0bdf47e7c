// Engine tensors through safetensors files: exact round trips, casts on load, and mismatches reported before any copy.
import * as assert from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTensorsInto, saveTensors } from '../../src/core/io';
import { Tensor, keep } from '../../src/core/tensor';

describe('tensors <-> safetensors', () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-tensors-'))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('round-trips every engine dtype exactly', () => {
    const file = path.join(dir, 'all.safetensors');
    const src = new Map<string, Tensor>([
      ['a.w', keep(Tensor.from([1.5, -2, 3.25, 4], [2, 2], 'f32'))],
      ['a.h', keep(Tensor.from([0.1, 0.2, 0.3], [3], 'f16'))],
      ['a.b', keep(Tensor.from([0.1, 1e20], [2], 'bf16'))],
      ['ids', keep(Tensor.from([7, -1, 2 ** 31 - 1], [3], 'i32'))],
    ]);
    saveTensors(file, src, { format: 'dalle-test' });
    const dst = new Map([...src].map(([k, t]) => [k, keep(Tensor.zeros(t.shape, t.dtype))] as [string, Tensor]));
    assert.deepStrictEqual(loadTensorsInto(file, dst), { format: 'dalle-test' });
    for (const [k, t] of src) assert.deepStrictEqual([...dst.get(k)!.toHost()], [...t.toHost()], k);
    for (const t of [...src.values(), ...dst.values()]) t.dispose();
  });

  it('casts to the target dtype on load', () => {
    const file = path.join(dir, 'cast.safetensors');
    const w = keep(Tensor.from([0.5, 0.25], [2], 'f32'));
    saveTensors(file, [['w', w]]);
    const half = keep(Tensor.zeros([2], 'f16'));
    loadTensorsInto(file, new Map([['w', half]]));
    assert.deepStrictEqual([...half.toArray()], [0.5, 0.25]);
    w.dispose();
    half.dispose();
  });

  it('lists every mismatch and copies nothing', () => {
    const file = path.join(dir, 'other.safetensors');
    const a = keep(Tensor.ones([2, 3]));
    const extra = keep(Tensor.ones([1]));
    saveTensors(file, [['a', a], ['extra', extra]]);
    const target = keep(Tensor.zeros([3, 2]));
    const missing = keep(Tensor.zeros([4]));
    assert.throws(
      () => loadTensorsInto(file, new Map([['a', target], ['b', missing]])),
      /'a' is \(2, 3\) in the file, \(3, 2\) in the model; missing 'b' \(4\); unexpected 'extra'/,
    );
    assert.deepStrictEqual([...target.toArray()], [0, 0, 0, 0, 0, 0]);
    for (const t of [a, extra, target, missing]) t.dispose();
  });

  it('fails clearly on a truncated file', () => {
    const file = path.join(dir, 'cut.safetensors');
    const a = keep(Tensor.ones([64]));
    saveTensors(file, [['a', a]]);
    fs.truncateSync(file, fs.statSync(file).size - 10);
    assert.throws(() => loadTensorsInto(file, new Map([['a', a]])), /SafetensorsError|cut\.safetensors/);
    a.dispose();
  });
});
