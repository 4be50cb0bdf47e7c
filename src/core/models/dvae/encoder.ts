// The dVAE encoder (openai/DALL-E, dall_e/encoder.py): mapped pixels -> logits over the codebook at every grid cell.
//   input 7x7 conv C -> n_hid; group g = 1..G: n_blk_per_group resblocks to 2^(g-1) n_hid, then a 2x2 max-pool
//   (all groups but the last); output: ReLU, 1x1 conv to V logits.
// Key: B = batch, C = image channels, V = vocab_size, G = n_groups, f = 2^(G-1), H, W = image side, h = H/f, w = W/f.
import { Conv2d, Module } from '../../nn';
import { maxPool2x2, relu } from '../../ops';
import { Philox, Tensor, shapeStr } from '../../tensor';
import { DvaeArch, sideLayout } from './layout';
import { Named, ResBlock, makeConv } from './resblock';

interface Group {
  readonly blocks: readonly ResBlock[];
  readonly pool: boolean;
}

export class Encoder extends Module {
  readonly input: Conv2d; // w (n_hid, C, 7, 7)
  readonly groups: readonly Group[];
  readonly output: Conv2d; // w (V, 2^(G-1) n_hid, 1, 1)

  constructor(readonly arch: DvaeArch, rng: Philox) {
    super();
    const layout = sideLayout('encoder', arch);
    const blocks = this.addModule('blocks', new Named());
    this.input = blocks.add('input', makeConv(layout.input, rng));
    this.groups = layout.groups.map((g) => {
      const gm = blocks.add(g.name, new Named());
      return { blocks: g.blocks.map((b) => gm.add(b.name, new ResBlock(b, rng))), pool: g.resample };
    });
    this.output = blocks.add('output', new Named()).add('conv', makeConv(layout.output, rng));
  }

  /** x: pixels mapped to (eps, 1 - eps) (B, C, H, W) -> logits (B, V, h, w). */
  forward(x: Tensor): Tensor {
    return this.output.forward(this.features(x)); // (B, V, h, w)
  }

  /** What the output 1x1 conv sees: ReLU of the last group, (B, 2^(G-1) n_hid, h, w). */
  features(x: Tensor): Tensor {
    const { input_channels: C, n_groups: G } = this.arch;
    const f = 2 ** (G - 1);
    if (x.rank !== 4 || x.shape[1] !== C || x.shape[2] % f !== 0 || x.shape[3] % f !== 0) {
      throw new Error(`dalle: dVAE encoder takes (B, ${C}, H, W) with H and W multiples of ${f}, got ${shapeStr(x.shape)}`);
    }
    let h = this.input.forward(x); // (B, n_hid, H, W)
    for (const g of this.groups) {
      for (const b of g.blocks) h = b.forward(h); // (B, 2^(g-1) n_hid, H', W')
      if (g.pool) h = maxPool2x2(h); // (B, ., H'/2, W'/2)
    }
    return relu(h); // (B, 2^(G-1) n_hid, h, w)
  }
}

