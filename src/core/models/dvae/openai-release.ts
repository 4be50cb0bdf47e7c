/**
 * OpenAI's released dVAE (openai/DALL-E: encoder.pkl, decoder.pkl) read as data: the module records that
 * io/torch-file.ts rebuilds from the pickles are checked against the architecture our dVAE builds (layout.ts), module
 * by module in forward order, and their parameters are returned under our names (the released names with an
 * `encoder.` / `decoder.` prefix: `encoder.blocks.group_1.block_1.res_path.conv_1.w`, ...).
 *
 * The released structure (dall_e/encoder.py, decoder.py, utils.py), pre-order, for the encoder:
 *   Encoder > blocks: Sequential > input: Conv2d, group_g: Sequential > [block_i: EncoderBlock > id_path: Conv2d |
 *   Identity, res_path: Sequential > relu_1: ReLU, conv_1: Conv2d, ... conv_4], pool: MaxPool2d (g < G); output:
 *   Sequential > relu: ReLU, conv: Conv2d. The decoder has DecoderBlock and upsample: Upsample instead.
 * Conv2d holds parameters `w` (out, in, k, k) and `b` (out); attributes (n_hid, vocab_size, ...) are plain values.
 */
import { DvaeArch, SideLayout, sideConvs, sideLayout } from './layout';
import { PickleDict, PickleObject, describe } from '../../io/pickle';
import { TorchDtype, TorchFile, TorchTensor } from '../../io/torch-file';
import { countNonFinite } from '../../io/finite';

/** The released files' structure does not match a dVAE this toolchain builds: exit code 4 (input). */
export class OpenAiDvaeError extends Error {
  override readonly name = 'OpenAiDvaeError';

  constructor(
    message: string,
    readonly hint = 'give OpenAI\'s released encoder.pkl and decoder.pkl (openai/DALL-E), as downloaded',
  ) {
    super(message);
  }
}

type Side = 'encoder' | 'decoder';

const CLASS = {
  encoder: 'dall_e.encoder.Encoder',
  encoderBlock: 'dall_e.encoder.EncoderBlock',
  decoder: 'dall_e.decoder.Decoder',
  decoderBlock: 'dall_e.decoder.DecoderBlock',
  conv: 'dall_e.utils.Conv2d',
  sequential: 'torch.nn.modules.container.Sequential',
  relu: 'torch.nn.modules.activation.ReLU',
  maxPool: 'torch.nn.modules.pooling.MaxPool2d',
  upsample: 'torch.nn.modules.upsampling.Upsample',
  identity: 'torch.nn.modules.linear.Identity',
} as const;

/** Every class the released files may hold, for the pickle reader's allow-list. */
export const OPENAI_DVAE_CLASSES: readonly string[] = Object.values(CLASS);

/** Module nesting deeper than the released files' (5 levels) is refused before it can exhaust the stack. */
const MAX_DEPTH = 16;

export interface OpenAiDvae {
  readonly arch: DvaeArch;
  /** Our parameter name -> shape and f32 values (f16 storages widened exactly). */
  readonly tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array }>;
  /** Storage dtypes found in each file. */
  readonly dtypes: Readonly<Record<Side, readonly TorchDtype[]>>;
}

interface FlatModule {
  readonly path: string;
  readonly record: PickleObject;
}

/** The module tree of a file in pre-order (forward order), checked to be module records all the way down. */
function flatten(file: TorchFile): FlatModule[] {
  const out: FlatModule[] = [];
  const walk = (value: unknown, path: string, depth: number): void => {
    if (!(value instanceof PickleObject) || !value.built) throw new OpenAiDvaeError(`${file.file}: ${path || 'the saved object'} is a ${describe(value)}, not a module`);
    if (depth > MAX_DEPTH) throw new OpenAiDvaeError(`${file.file}: modules nest deeper than ${MAX_DEPTH} levels at ${path}`);
    out.push({ path, record: value });
    for (const [name, child] of dictOf(file, value, '_modules', path)) walk(child, path ? `${path}.${name}` : String(name), depth + 1);
  };
  walk(file.root, '', 0);
  return out;
}

function dictOf(file: TorchFile, record: PickleObject, key: string, path: string): Map<unknown, unknown> {
  const dict = record.state.get(key);
  if (!(dict instanceof PickleDict)) throw new OpenAiDvaeError(`${file.file}: module ${path || '(root)'} has no ${key} dict (${describe(dict)})`);
  return dict.entries;
}

function intAttr(file: TorchFile, record: PickleObject, key: string, path = ''): number {
  const value = record.state.get(key);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new OpenAiDvaeError(`${file.file}: ${record.className}${path ? ` at ${path}` : ''} has ${key} = ${describe(value)}, not an integer >= 1`);
  }
  return value;
}

/** The classes expected in pre-order for a side's layout, with the checks each module's attributes must pass. */
function expectedModules(side: Side, layout: SideLayout, arch: DvaeArch): Array<[string, string, ((r: PickleObject) => string | undefined)?]> {
  const strip = (name: string): string => name.slice(`${side}.`.length);
  const layers = arch.n_groups * arch.n_blk_per_group;
  const out: Array<[string, string, ((r: PickleObject) => string | undefined)?]> = [
    ['', side === 'encoder' ? CLASS.encoder : CLASS.decoder],
    ['blocks', CLASS.sequential],
    [strip(layout.input.name), CLASS.conv],
  ];
  for (const g of layout.groups) {
    out.push([`blocks.${g.name}`, CLASS.sequential]);
    for (const b of g.blocks) {
      const path = `blocks.${g.name}.${b.name}`;
      out.push([path, side === 'encoder' ? CLASS.encoderBlock : CLASS.decoderBlock, (r) => {
        const gain = r.state.get('post_gain');
        if (r.state.get('n_layers') !== layers) return `n_layers is ${describe(r.state.get('n_layers'))}, the structure has ${layers} blocks`;
        if (typeof gain !== 'number' || Math.abs(gain - b.postGain) > 1e-12 * b.postGain) return `post_gain is ${describe(gain)}, not 1 / ${layers}^2`;
        return undefined;
      }]);
      out.push([`${path}.id_path`, b.idPath ? CLASS.conv : CLASS.identity]);
      out.push([`${path}.res_path`, CLASS.sequential]);
      b.resPath.forEach((_, j) => out.push([`${path}.res_path.relu_${j + 1}`, CLASS.relu], [`${path}.res_path.conv_${j + 1}`, CLASS.conv]));
    }
    if (g.resample && side === 'encoder') {
      out.push([`blocks.${g.name}.pool`, CLASS.maxPool, (r) => {
        const s = r.state;
        const plain = [['kernel_size', 2], ['stride', 2], ['padding', 0], ['dilation', 1], ['ceil_mode', false], ['return_indices', false]] as const;
        const wrong = plain.find(([key, value]) => s.get(key) !== value);
        return wrong ? `${wrong[0]} is ${describe(s.get(wrong[0]))}, not ${wrong[1]}` : undefined;
      }]);
    }
    if (g.resample && side === 'decoder') {
      out.push([`blocks.${g.name}.upsample`, CLASS.upsample, (r) => {
        if (r.state.get('scale_factor') !== 2) return `scale_factor is ${describe(r.state.get('scale_factor'))}, not 2`;
        if (r.state.get('mode') !== 'nearest') return `mode is ${describe(r.state.get('mode'))}, not 'nearest'`;
        if ((r.state.get('size') ?? null) !== null) return `size is ${describe(r.state.get('size'))}, not None`;
        return undefined;
      }]);
    }
  }
  out.push(['blocks.output', CLASS.sequential], ['blocks.output.relu', CLASS.relu], [strip(layout.output.name), CLASS.conv]);
  return out;
}

/** The architecture a side's root attributes and group count describe. */
function sideArch(file: TorchFile, side: Side): Omit<DvaeArch, 'n_init'> & { n_init?: number } {
  const root = file.root;
  const expected = side === 'encoder' ? CLASS.encoder : CLASS.decoder;
  if (!(root instanceof PickleObject) || root.className !== expected) {
    const other = side === 'encoder' ? CLASS.decoder : CLASS.encoder;
    const swapped = root instanceof PickleObject && root.className === other;
    throw new OpenAiDvaeError(
      `--${side} ${file.file} holds ${root instanceof PickleObject ? `a ${root.className}` : `a ${describe(root)}`}, not a ${expected}`,
      swapped ? 'the files are swapped: give encoder.pkl as --encoder and decoder.pkl as --decoder' : undefined,
    );
  }
  const blocks = dictOf(file, root, '_modules', '').get('blocks');
  if (!(blocks instanceof PickleObject)) throw new OpenAiDvaeError(`${file.file}: the ${side} has no blocks module`);
  const groups = [...dictOf(file, blocks, '_modules', 'blocks').keys()].filter((name) => /^group_\d+$/.test(String(name))).length;
  return {
    n_hid: intAttr(file, root, 'n_hid'),
    n_groups: groups,
    n_blk_per_group: intAttr(file, root, 'n_blk_per_group'),
    vocab_size: intAttr(file, root, 'vocab_size'),
    input_channels: intAttr(file, root, side === 'encoder' ? 'input_channels' : 'output_channels'),
    n_init: side === 'decoder' ? intAttr(file, root, 'n_init') : undefined,
  };
}

/** Checks one side's modules against `arch` and returns its parameters under our names. */
function sideTensors(file: TorchFile, side: Side, arch: DvaeArch, out: Map<string, { shape: readonly number[]; data: Float32Array }>): void {
  const layout = sideLayout(side, arch);
  const expected = expectedModules(side, layout, arch);
  const found = flatten(file);
  const count = Math.max(expected.length, found.length);
  for (let i = 0; i < count; i++) {
    const want = expected[i];
    const got = found[i];
    if (!want || !got || want[0] !== got.path || want[1] !== got.record.className) {
      throw new OpenAiDvaeError(
        `${file.file}: module ${i} in forward order is ${got ? `${got.path || '(root)'} (${got.record.className})` : 'missing'}, ` +
          `the released ${side} of n_hid ${arch.n_hid}, ${arch.n_groups} groups of ${arch.n_blk_per_group} blocks has ${want ? `${want[0] || '(root)'} (${want[1]})` : 'no more modules'}`,
      );
    }
    const problem = want[2]?.(got.record);
    if (problem) throw new OpenAiDvaeError(`${file.file}: ${got.path} (${got.record.className}): ${problem}, which the released ${side} never has`);
    if (dictOf(file, got.record, '_buffers', got.path).size > 0) throw new OpenAiDvaeError(`${file.file}: ${got.path || '(root)'} holds buffers, which the released ${side} never has`);
    const params = dictOf(file, got.record, '_parameters', got.path);
    const names = [...params.keys()].map(String);
    const isConv = want[1] === CLASS.conv;
    if (names.join(',') !== (isConv ? 'w,b' : '')) {
      throw new OpenAiDvaeError(`${file.file}: ${got.path || '(root)'} has parameters [${names.join(', ')}], expected ${isConv ? '[w, b]' : 'none'}`);
    }
  }
  for (const conv of sideConvs(layout)) {
    const record = found.find((m) => `${side}.${m.path}` === conv.name)!.record;
    const params = dictOf(file, record, '_parameters', conv.name);
    if (record.state.get('kw') !== conv.k) throw new OpenAiDvaeError(`${file.file}: ${conv.name} has kw = ${describe(record.state.get('kw'))}, the released ${side} has ${conv.k}`);
    for (const [key, shape] of [['w', [conv.nOut, conv.nIn, conv.k, conv.k]], ['b', [conv.nOut]]] as const) {
      const name = `${conv.name}.${key}`;
      const t = params.get(key);
      if (!(t instanceof TorchTensor)) throw new OpenAiDvaeError(`${file.file}: ${name} is a ${describe(t)}, not a tensor`);
      if (t.shape.join(',') !== shape.join(',')) throw new OpenAiDvaeError(`${file.file}: ${name} has shape (${t.shape.join(', ')}), the released ${side} of these sizes has (${shape.join(', ')})`);
      const data = t.toFloat32();
      const bad = countNonFinite({ dtype: 'f32', shape: [...shape], data });
      if (bad > 0) throw new OpenAiDvaeError(`${file.file}: ${name} holds ${bad} NaN or infinite values`, 'the file is damaged: download it again');
      out.set(name, { shape, data });
    }
  }
}

/** The dVAE that an encoder file and a decoder file make together, checked (see the module comment). */
export function openAiDvae(encoder: TorchFile, decoder: TorchFile): OpenAiDvae {
  const e = sideArch(encoder, 'encoder');
  const d = sideArch(decoder, 'decoder');
  const differ = (['n_hid', 'n_groups', 'n_blk_per_group', 'vocab_size', 'input_channels'] as const).filter((key) => e[key] !== d[key]);
  if (differ.length > 0) {
    throw new OpenAiDvaeError(
      `${encoder.file} and ${decoder.file} are not one dVAE: ${differ.map((key) => `${key} ${e[key]} (encoder) vs ${d[key]} (decoder)`).join(', ')}`,
      'give the encoder and the decoder that were released together',
    );
  }
  const arch: DvaeArch = { ...e, n_init: d.n_init! };
  if (arch.n_hid % 4 !== 0) throw new OpenAiDvaeError(`${encoder.file}: n_hid ${arch.n_hid} is not a multiple of 4, which the released blocks require`);
  const tensors = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  sideTensors(encoder, 'encoder', arch, tensors);
  sideTensors(decoder, 'decoder', arch, tensors);
  const dtypes = (file: TorchFile): TorchDtype[] => [...new Set(file.tensors.map((t) => t.dtype))].sort();
  return { arch, tensors, dtypes: { encoder: dtypes(encoder), decoder: dtypes(decoder) } };
}
