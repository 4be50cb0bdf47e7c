// The dVAE resblock (openai/DALL-E, EncoderBlock / DecoderBlock): x -> id_path(x) + post_gain * res_path(x), where
// id_path is a 1x1 conv when the width changes (else the identity) and res_path is
// [ReLU, conv_1, ReLU, conv_2, ReLU, conv_3, ReLU, conv_4] with inner width n_out / 4. post_gain = 1 / n_layers^2
// (n_layers = all resblocks of one side) keeps the residual stream's scale near 1 at initialisation.
// Key: B = batch, I = n_in, O = n_out, M = O / 4, H, W = side.
import { Conv2d, Module } from '../../nn';
import { add } from '../../ops';
import { Philox, Tensor } from '../../tensor';
import { BlockSpec, ConvSpec } from './layout';

/** A named container (nn.Sequential with an OrderedDict): children keep their names, so parameter paths match. */
export class Named extends Module {
  add<M extends Module>(name: string, m: M): M {
    return this.addModule(name, m);
  }
}

/** Our Conv2d from a layout entry (std 1 / sqrt(in k^2) weights, zero bias: the released init). */
export function makeConv(spec: ConvSpec, rng: Philox): Conv2d {
  return new Conv2d(spec.nIn, spec.nOut, spec.k, rng);
}

export class ResBlock extends Module {
  readonly idPath: Conv2d | null; // (O, I, 1, 1) when I != O
  readonly resPath: readonly Conv2d[]; // encoder: 3x3 I->M, 3x3 M->M, 3x3 M->M, 1x1 M->O; decoder: 1x1, 3x3, 3x3, 3x3
  readonly postGain: number;

  constructor(readonly spec: BlockSpec, rng: Philox) {
    super();
    this.postGain = spec.postGain;
    this.idPath = spec.idPath ? this.addModule('id_path', makeConv(spec.idPath, rng)) : null;
    const res = this.addModule('res_path', new Named());
    this.resPath = spec.resPath.map((c, j) => res.add(`conv_${j + 1}`, makeConv(c, rng)));
  }

  /** x (B, I, H, W) -> (B, O, H, W). */
  forward(x: Tensor): Tensor {
    let h = x; // (B, I, H, W)
    const last = this.resPath.length - 1;
    // conv(relu(h)) ... -> (B, O, H, W); the last conv's weights carry post_gain (the same function as scaling its
    // output, without two passes over the activations)
    this.resPath.forEach((conv, j) => (h = conv.forwardAfterRelu(h, j === last ? this.postGain : 1)));
    const id = this.idPath ? this.idPath.forward(x) : x; // (B, O, H, W)
    return add(id, h);
  }
}
