// The dVAE decoder (openai/DALL-E, dall_e/decoder.py): (relaxed) one-hot codes -> logit-Laplace parameters per pixel.
//   input 1x1 conv V -> n_init; group g = 1..G: n_blk_per_group resblocks to 2^(G-g) n_hid, then nearest 2x
//   upsampling (all groups but the last); output: ReLU, 1x1 conv to 2C channels (C locations mu, C log-scales ln b).
// Key: B = batch, C = image channels, V = vocab_size, G = n_groups, f = 2^(G-1), h, w = grid side, H = f h, W = f w.
import { Conv2d, Module } from '../../nn';
import { add, contiguous, embedding, permute, reshape, transpose, upsample2x } from '../../ops';
import { Philox, Tensor, shapeStr } from '../../tensor';
import { DvaeArch, sideLayout } from './layout';
import { Named, ResBlock, makeConv } from './resblock';

interface Group {
  readonly blocks: readonly ResBlock[];
  readonly upsample: boolean;
}

export class Decoder extends Module {
  readonly input: Conv2d; // w (n_init, V, 1, 1)
  readonly groups: readonly Group[];
  readonly output: Conv2d; // w (2C, n_hid, 1, 1)

  constructor(readonly arch: DvaeArch, rng: Philox) {
    super();
    const layout = sideLayout('decoder', arch);
    const blocks = this.addModule('blocks', new Named());
    this.input = blocks.add('input', makeConv(layout.input, rng));
    this.groups = layout.groups.map((g) => {
      const gm = blocks.add(g.name, new Named());
      return { blocks: g.blocks.map((b) => gm.add(b.name, new ResBlock(b, rng))), upsample: g.resample };
    });
    this.output = blocks.add('output', new Named()).add('conv', makeConv(layout.output, rng));
  }

  /** z: one-hot or relaxed codes (B, V, h, w) -> stats (B, 2C, H, W): channels [0, C) mu, [C, 2C) ln b. */
  forward(z: Tensor): Tensor {
    const V = this.arch.vocab_size;
    if (z.rank !== 4 || z.shape[1] !== V) throw new Error(`dalle: dVAE decoder takes (B, ${V}, h, w), got ${shapeStr(z.shape)}`);
    return this.body(this.input.forward(z)); // (B, n_init, h, w) -> (B, 2C, H, W)
  }

  /**
   * Hard codes (B, h, w) i32 -> stats (B, 2C, H, W). The input 1x1 conv of a one-hot vector is a row of its weight plus
   * the bias, so this looks the rows up instead of building the (B, V, h, w) one-hot tensor: same values, V times less
   * work.
   */
  forwardCodes(codes: Tensor): Tensor {
    const { vocab_size: V, n_init: N } = this.arch;
    if (codes.rank !== 3 || codes.dtype !== 'i32') throw new Error(`dalle: dVAE codes must be i32 (B, h, w), got ${codes.dtype} ${shapeStr(codes.shape)}`);
    const table = contiguous(transpose(reshape(this.input.w, [N, V]))); // (V, n_init)
    const e = embedding(table, codes); // (B, h, w, n_init)
    const h0 = add(permute(e, [0, 3, 1, 2]), reshape(this.input.b, [1, N, 1, 1])); // (B, n_init, h, w)
    return this.body(h0);
  }

  private body(h0: Tensor): Tensor {
    let h = h0; // (B, n_init, h, w)
    for (const g of this.groups) {
      for (const b of g.blocks) h = b.forward(h); // (B, 2^(G-g) n_hid, h', w')
      if (g.upsample) h = upsample2x(h); // (B, ., 2h', 2w')
    }
    return this.output.forwardAfterRelu(h); // conv(relu(h)): (B, 2C, H, W)
  }
}
