/**
 * torch.save files read without running them: the fixtures (test/fixtures/openai-dvae, written by PyTorch 1.13 from
 * look-alike dall_e modules by scripts/fixtures/openai_dvae_fixtures.py) in the zip and the legacy format give the
 * same module records and tensors; damaged files are named errors; a pickle that would run code is refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PickleObject, PickleRefusedError } from '../../src/core/io/pickle';
import { TorchFile, TorchFileError, readTorchFile } from '../../src/core/io/torch-file';
import { OPENAI_DVAE_CLASSES } from '../../src/core/models/dvae/openai-release';

const FIXTURES = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'openai-dvae');
const fixture = (name: string): string => path.join(FIXTURES, name);

/** Parameter path -> [dtype, shape, f32 values] of a module tree. */
function parameters(file: TorchFile): Map<string, [string, string, Float32Array]> {
  const out = new Map<string, [string, string, Float32Array]>();
  const walk = (m: PickleObject, prefix: string): void => {
    for (const [name, t] of (m.state.get('_parameters') as { entries: Map<string, unknown> }).entries) {
      const tensor = t as { dtype: string; shape: number[]; toFloat32(): Float32Array };
      out.set(prefix + name, [tensor.dtype, tensor.shape.join('x'), tensor.toFloat32()]);
    }
    for (const [name, child] of (m.state.get('_modules') as { entries: Map<string, unknown> }).entries) walk(child as PickleObject, `${prefix}${name}.`);
  };
  walk(file.root as PickleObject, '');
  return out;
}

describe('io/torch-file: torch.save files, zip and legacy', () => {
  let work: string;
  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-torch-file-'));
  });
  after(() => fs.rmSync(work, { recursive: true, force: true }));

  it('reads the zip and the legacy encoder as the same module records and tensors', async () => {
    const zip = await readTorchFile(fixture('encoder.zip.pkl'), OPENAI_DVAE_CLASSES);
    const legacy = await readTorchFile(fixture('encoder.legacy.pkl'), OPENAI_DVAE_CLASSES);
    assert.equal(zip.format, 'zip');
    assert.equal(legacy.format, 'legacy');
    const root = zip.root as PickleObject;
    assert.equal(root.className, 'dall_e.encoder.Encoder');
    assert.deepEqual([root.state.get('n_hid'), root.state.get('vocab_size'), root.state.get('device')], [4, 32, 'cpu']);
    const a = parameters(zip);
    const b = parameters(legacy);
    assert.equal(a.size, 42); // 21 convs, w and b
    assert.deepEqual([...a.keys()], [...b.keys()]);
    assert.deepEqual(a.get('blocks.input.w')!.slice(0, 2), ['f32', '4x3x7x7']);
    for (const [name, [dtype, shape, values]] of a) {
      assert.deepEqual([dtype, shape], b.get(name)!.slice(0, 2), name);
      assert.deepEqual(values, b.get(name)![2], name);
    }
  });

  it('reads f16 storages (the legacy decoder\'s res_path weights) as the same values as the zip decoder\'s f32', async () => {
    const a = parameters(await readTorchFile(fixture('decoder.zip.pkl'), OPENAI_DVAE_CLASSES));
    const b = parameters(await readTorchFile(fixture('decoder.legacy.pkl'), OPENAI_DVAE_CLASSES));
    assert.equal(b.get('blocks.group_1.block_1.res_path.conv_2.w')![0], 'f16');
    assert.equal(b.get('blocks.input.w')![0], 'f32');
    for (const [name, [, shape, values]] of a) {
      assert.equal(shape, b.get(name)![1], name);
      assert.deepEqual(values, b.get(name)![2], name);
    }
  });

  it('rebuilds views of one storage: offsets and strides (a transpose, a row)', async () => {
    const file = await readTorchFile(fixture('views.pkl'), []);
    const entries = (file.root as { entries: Map<string, { shape: number[]; toFloat32(): Float32Array }> }).entries;
    const values = (name: string): [number[], number[]] => [entries.get(name)!.shape, Array.from(entries.get(name)!.toFloat32())];
    assert.deepEqual(values('x'), [[2, 3], [0, 1, 2, 3, 4, 5]]);
    assert.deepEqual(values('x_t'), [[3, 2], [0, 3, 1, 4, 2, 5]]);
    assert.deepEqual(values('row_1'), [[3], [3, 4, 5]]);
  });

  it('refuses the pickle that would call os.system, naming it', async () => {
    await assert.rejects(readTorchFile(fixture('evil.pkl'), OPENAI_DVAE_CLASSES), (e: unknown) => {
      assert.ok(e instanceof PickleRefusedError);
      assert.match(e.message, /evil\.pkl: its pickle imports posix\.system, which this file type never holds/);
      return true;
    });
  });

  it('refuses module classes it was not told about', async () => {
    await assert.rejects(readTorchFile(fixture('encoder.zip.pkl'), ['dall_e.utils.Conv2d']), /imports dall_e\.encoder\.Encoder/);
  });

  it('names truncated and foreign files', async () => {
    for (const name of ['encoder.legacy.pkl', 'encoder.zip.pkl']) {
      const whole = fs.readFileSync(fixture(name));
      for (const keep of [whole.length - 100, Math.floor(whole.length / 2)]) {
        const cut = path.join(work, `cut-${keep}-${name}`);
        fs.writeFileSync(cut, whole.subarray(0, keep));
        await assert.rejects(readTorchFile(cut, OPENAI_DVAE_CLASSES), (e: unknown) => e instanceof Error && ['TorchFileError', 'PickleFormatError'].includes(e.name), `${name} cut to ${keep}`);
      }
    }
    const foreign = path.join(work, 'image.pkl');
    fs.copyFileSync(fixture('image-0.png'), foreign);
    await assert.rejects(readTorchFile(foreign, OPENAI_DVAE_CLASSES), (e: unknown) => e instanceof TorchFileError && /neither a zip archive nor a pickle/.test(e.message));
    await assert.rejects(readTorchFile(path.join(work, 'missing.pkl'), OPENAI_DVAE_CLASSES), /no such file/);
  });

  it('refuses a legacy storage whose recorded size disagrees with its pickle', async () => {
    const whole = Buffer.from(fs.readFileSync(fixture('encoder.legacy.pkl')));
    // The first storage's int64 element count follows the keys pickle; find it by the first key's count (588 = 4x3x7x7).
    const count = Buffer.alloc(8);
    count.writeBigInt64LE(588n);
    const at = whole.indexOf(count);
    assert.ok(at > 0);
    whole.writeBigInt64LE(589n, at);
    const bad = path.join(work, 'bad-count.pkl');
    fs.writeFileSync(bad, whole);
    await assert.rejects(readTorchFile(bad, OPENAI_DVAE_CLASSES), /says 589 elements, the pickle 588/);
  });
});
