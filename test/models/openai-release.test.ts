/**
 * The released dVAE's module records checked against our layout: the fixture files (look-alike dall_e modules written
 * by PyTorch, test/fixtures/openai-dvae) pass; each kind of difference the conversion must not paper over (files of two
 * different dVAEs, a module out of place, a changed pooling, a non-finite weight) is an error naming it.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { PickleDict, PickleObject } from '../../src/core/io/pickle';
import { TorchFile, TorchTensor, readTorchFile } from '../../src/core/io/torch-file';
import { dvaeParameterShapes } from '../../src/core/models/dvae/layout';
import { OPENAI_DVAE_CLASSES, OpenAiDvaeError, openAiDvae } from '../../src/core/models/dvae/openai-release';

const FIXTURES = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'openai-dvae');
const read = (name: string): Promise<TorchFile> => readTorchFile(path.join(FIXTURES, name), OPENAI_DVAE_CLASSES);

/** The record at a dotted module path. */
function moduleAt(file: TorchFile, dotted: string): PickleObject {
  let m = file.root as PickleObject;
  for (const name of dotted.split('.')) m = (m.state.get('_modules') as PickleDict).entries.get(name) as PickleObject;
  return m;
}

describe('models/dvae/openai-release: released module records -> our dVAE', () => {
  it('gives the architecture and every parameter our dVAE has, under its names and shapes', async () => {
    const dvae = openAiDvae(await read('encoder.zip.pkl'), await read('decoder.legacy.pkl'));
    assert.deepEqual(dvae.arch, { n_hid: 4, n_groups: 4, n_blk_per_group: 1, vocab_size: 32, input_channels: 3, n_init: 8 });
    const shapes = dvaeParameterShapes(dvae.arch);
    assert.deepEqual([...dvae.tensors.keys()].sort(), shapes.map(([name]) => name).sort());
    for (const [name, shape] of shapes) assert.deepEqual(dvae.tensors.get(name)!.shape, shape, name);
    assert.deepEqual(dvae.dtypes, { encoder: ['f32'], decoder: ['f16', 'f32'] });
  });

  it('refuses an encoder and a decoder of two different dVAEs', async () => {
    const decoder = await read('decoder.zip.pkl');
    (decoder.root as PickleObject).state.set('vocab_size', 64);
    const encoder = await read('encoder.zip.pkl');
    assert.throws(() => openAiDvae(encoder, decoder), (e: unknown) => e instanceof OpenAiDvaeError && /are not one dVAE: vocab_size 32 \(encoder\) vs 64 \(decoder\)/.test(e.message));
  });

  it('refuses a module out of place, a changed pooling or upsampling, and a non-finite weight', async () => {
    const encoder = await read('encoder.zip.pkl');
    const decoder = await read('decoder.zip.pkl');
    const group1 = (moduleAt(encoder, 'blocks.group_1').state.get('_modules') as PickleDict).entries;
    const pool = group1.get('pool');
    group1.delete('pool');
    assert.throws(() => openAiDvae(encoder, decoder), /module 15 in forward order is blocks\.group_2 .* has blocks\.group_1\.pool \(torch\.nn\.modules\.pooling\.MaxPool2d\)/);
    group1.set('pool', pool);
    moduleAt(encoder, 'blocks.group_2.pool').state.set('kernel_size', 3);
    assert.throws(() => openAiDvae(encoder, decoder), /blocks\.group_2\.pool .*kernel_size is number 3, not 2/);
    moduleAt(encoder, 'blocks.group_2.pool').state.set('kernel_size', 2);
    moduleAt(decoder, 'blocks.group_3.upsample').state.set('mode', 'bilinear');
    assert.throws(() => openAiDvae(encoder, decoder), /blocks\.group_3\.upsample .*mode is string "bilinear", not 'nearest'/);
    moduleAt(decoder, 'blocks.group_3.upsample').state.set('mode', 'nearest');
    const w = (moduleAt(decoder, 'blocks.output.conv').state.get('_parameters') as PickleDict).entries.get('w') as TorchTensor;
    (w.data as Float32Array)[5] = Number.NaN;
    assert.throws(() => openAiDvae(encoder, decoder), /decoder\.blocks\.output\.conv\.w holds 1 NaN or infinite values/);
  });
});
