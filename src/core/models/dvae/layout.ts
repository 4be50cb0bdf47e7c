// The dVAE's architecture as plain data: every conv with its dotted name, widths and kernel size, computed from the
// hyper-parameters alone. The modules (encoder.ts, decoder.ts) are built from this layout, and the tests check the
// layout of the paper model (n_hid 256, 4 groups, 2 blocks, vocab 8192) without allocating its ~98M parameters.
// Names and nesting are those of OpenAI's released dVAE (openai/DALL-E, dall_e/encoder.py and decoder.py), so weights
// converted from it load unchanged:
//   encoder.blocks.input                       7x7 conv, C -> n_hid
//   encoder.blocks.group_g.block_i.id_path     1x1 conv, only when the block changes width
//   encoder.blocks.group_g.block_i.res_path.conv_1 .. conv_4   (3x3, 3x3, 3x3, 1x1), inner width n_out / 4
//   encoder.blocks.output.conv                 1x1 conv, 2^(G-1) n_hid -> V
//   decoder.blocks.input                       1x1 conv, V -> n_init
//   decoder.blocks.group_g.block_i...          res_path kernels (1x1, 3x3, 3x3, 3x3)
//   decoder.blocks.output.conv                 1x1 conv, n_hid -> 2C (C locations, C log-scales)
// Key: B = batch, C = image channels, V = vocab_size, G = n_groups, H, W = image side, h, w = token grid side.

/** The hyper-parameters that fix the architecture (the `model` section of the dVAE config). */
export interface DvaeArch {
  /** Width of encoder group 1 (and decoder group G); group g of the encoder is 2^(g-1) n_hid wide. */
  readonly n_hid: number;
  /** Resblock groups; all but the last pool (encoder) or upsample (decoder) by 2. */
  readonly n_groups: number;
  readonly n_blk_per_group: number;
  readonly vocab_size: number;
  /** Image channels C (the decoder outputs 2C: locations and log-scales). */
  readonly input_channels: number;
  /** Width of the decoder's input 1x1 conv from the codes. */
  readonly n_init: number;
}

/** The released model's hyper-parameters (dall_e/encoder.py, decoder.py defaults). */
export const RELEASED_ARCH: DvaeArch = Object.freeze({
  n_hid: 256,
  n_groups: 4,
  n_blk_per_group: 2,
  vocab_size: 8192,
  input_channels: 3,
  n_init: 128,
});

export interface ConvSpec {
  /** Dotted path of the conv module (its parameters are `<name>.w` and `<name>.b`). */
  readonly name: string;
  readonly nIn: number;
  readonly nOut: number;
  readonly k: number;
}

export interface BlockSpec {
  readonly name: string; // e.g. 'group_2.block_1' (relative to `<side>.blocks`)
  readonly nIn: number;
  readonly nOut: number;
  /** 1x1 conv on the identity path when nIn != nOut, else null (nn.Identity in the released code). */
  readonly idPath: ConvSpec | null;
  /** conv_1 .. conv_4 of the residual path, each preceded by a ReLU. */
  readonly resPath: readonly ConvSpec[];
  /** 1 / n_layers^2 with n_layers = n_groups * n_blk_per_group (released: 1/64). */
  readonly postGain: number;
}

export interface GroupSpec {
  readonly name: string; // 'group_g'
  readonly blocks: readonly BlockSpec[];
  /** 2x2 max-pool (encoder) or nearest 2x upsampling (decoder) after the blocks. */
  readonly resample: boolean;
}

export interface SideLayout {
  readonly input: ConvSpec;
  readonly groups: readonly GroupSpec[];
  readonly output: ConvSpec;
}

export type Side = 'encoder' | 'decoder';

/** Kernel sizes of conv_1 .. conv_4 in a resblock's residual path. */
const RES_KERNELS: Record<Side, readonly number[]> = { encoder: [3, 3, 3, 1], decoder: [1, 3, 3, 3] };

export function checkArch(a: DvaeArch): void {
  const ints: Array<[keyof DvaeArch, number]> = [['n_hid', 1], ['n_groups', 1], ['n_blk_per_group', 1], ['vocab_size', 2],
    ['input_channels', 1], ['n_init', 1]];
  for (const [key, min] of ints) {
    const v = a[key];
    if (!Number.isInteger(v) || v < min) throw new Error(`dalle: dVAE model.${key} must be an integer >= ${min}, got ${v}`);
  }
  // Every resblock's inner width is n_out / 4 (the released code asserts n_out % 4 == 0).
  if (a.n_hid % 4 !== 0) throw new Error(`dalle: dVAE model.n_hid must be a multiple of 4 (resblocks are n_out / 4 wide inside), got ${a.n_hid}`);
}

function blockSpec(side: Side, prefix: string, name: string, nIn: number, nOut: number, postGain: number): BlockSpec {
  const path = `${prefix}.${name}`;
  const nMid = nOut / 4;
  const ks = RES_KERNELS[side];
  const widths: Array<[number, number]> = [[nIn, nMid], [nMid, nMid], [nMid, nMid], [nMid, nOut]];
  return {
    name,
    nIn,
    nOut,
    idPath: nIn !== nOut ? { name: `${path}.id_path`, nIn, nOut, k: 1 } : null,
    resPath: widths.map(([i, o], j) => ({ name: `${path}.res_path.conv_${j + 1}`, nIn: i, nOut: o, k: ks[j] })),
    postGain,
  };
}

/** The layout of one side, with names prefixed by `<side>.blocks`. */
export function sideLayout(side: Side, a: DvaeArch): SideLayout {
  checkArch(a);
  const root = `${side}.blocks`;
  const G = a.n_groups;
  const postGain = 1 / (G * a.n_blk_per_group) ** 2;
  // Encoder group g (1-based) is 2^(g-1) n_hid wide; decoder group g is 2^(G-g) n_hid wide.
  const width = (g: number): number => (side === 'encoder' ? 2 ** (g - 1) : 2 ** (G - g)) * a.n_hid;
  const first = side === 'encoder' ? a.n_hid : a.n_init; // width entering group 1
  const groups: GroupSpec[] = [];
  for (let g = 1; g <= G; g++) {
    const nOut = width(g);
    const nIn0 = g === 1 ? first : width(g - 1);
    const blocks: BlockSpec[] = [];
    for (let i = 1; i <= a.n_blk_per_group; i++) {
      blocks.push(blockSpec(side, `${root}.group_${g}`, `block_${i}`, i === 1 ? nIn0 : nOut, nOut, postGain));
    }
    groups.push({ name: `group_${g}`, blocks, resample: g < G });
  }
  const input: ConvSpec = side === 'encoder'
    ? { name: `${root}.input`, nIn: a.input_channels, nOut: a.n_hid, k: 7 }
    : { name: `${root}.input`, nIn: a.vocab_size, nOut: a.n_init, k: 1 };
  const output: ConvSpec = side === 'encoder'
    ? { name: `${root}.output.conv`, nIn: width(G), nOut: a.vocab_size, k: 1 }
    : { name: `${root}.output.conv`, nIn: width(G), nOut: 2 * a.input_channels, k: 1 };
  return { input, groups, output };
}

/** Every conv of one side in registration order (= the released state_dict order). */
export function sideConvs(layout: SideLayout): ConvSpec[] {
  const out: ConvSpec[] = [layout.input];
  for (const g of layout.groups) {
    for (const b of g.blocks) {
      if (b.idPath) out.push(b.idPath);
      out.push(...b.resPath);
    }
  }
  out.push(layout.output);
  return out;
}

/** Names and shapes of every parameter, encoder then decoder, in the order Dvae.namedParameters() gives them. */
export function dvaeParameterShapes(a: DvaeArch): Array<[string, number[]]> {
  const out: Array<[string, number[]]> = [];
  for (const side of ['encoder', 'decoder'] as const) {
    for (const c of sideConvs(sideLayout(side, a))) {
      out.push([`${c.name}.w`, [c.nOut, c.nIn, c.k, c.k]]);
      out.push([`${c.name}.b`, [c.nOut]]);
    }
  }
  return out;
}

/** Side of the token grid for an image side: every group but the last halves it. */
export function downsampleFactor(a: Pick<DvaeArch, 'n_groups'>): number {
  return 2 ** (a.n_groups - 1);
}
