// The dVAE (Ramesh et al. 2021, Appendix A; openai/DALL-E's released encoder and decoder): images <-> grids of codes.
// Parameters are named exactly as the released model's (`encoder.blocks.input.w`, ... `decoder.blocks.output.conv.b`;
// layout.ts lists them), so its converted weights load with loadTensorsInto(file, new Map(dvae.namedParameters())).
// Key: B = batch, C = image channels, V = vocab_size, f = 2^(n_groups - 1), H, W = image side, h = H/f, w = W/f.
import { Module } from '../../nn';
import { Philox, Tensor, noGrad, shapeStr, tidy } from '../../tensor';
import { sigmoid, slice } from '../../ops';
import { Decoder } from './decoder';
import { Encoder } from './encoder';
import { DvaeArch, RELEASED_ARCH, checkArch, downsampleFactor } from './layout';
import { LOGIT_LAPLACE_EPS, argmaxCodes, mapPixels, unmapPixels } from './loss';

/** The dVAE config (or its `model` section); missing keys take the released model's values. */
export type DvaeConfigInput = Partial<DvaeArch & { logit_laplace_eps: number }> | { model: Partial<DvaeArch & { logit_laplace_eps: number }> };

export interface DvaeOptions {
  /** Seed of the initial weights (default 0); or pass a generator. */
  seed?: number;
  rng?: Philox;
}

export function resolveArch(config: DvaeConfigInput): DvaeArch & { logit_laplace_eps: number } {
  const m = 'model' in config && typeof config.model === 'object' ? config.model : (config as Partial<DvaeArch>);
  const arch = {
    n_hid: m.n_hid ?? RELEASED_ARCH.n_hid,
    n_groups: m.n_groups ?? RELEASED_ARCH.n_groups,
    n_blk_per_group: m.n_blk_per_group ?? RELEASED_ARCH.n_blk_per_group,
    vocab_size: m.vocab_size ?? RELEASED_ARCH.vocab_size,
    input_channels: m.input_channels ?? RELEASED_ARCH.input_channels,
    n_init: m.n_init ?? RELEASED_ARCH.n_init,
    logit_laplace_eps: (m as { logit_laplace_eps?: number }).logit_laplace_eps ?? LOGIT_LAPLACE_EPS,
  };
  checkArch(arch);
  return arch;
}

export class Dvae extends Module {
  readonly arch: DvaeArch;
  /** Pixel-map eps (paper 0.1). */
  readonly eps: number;
  readonly encoder: Encoder;
  readonly decoder: Decoder;

  constructor(config: DvaeConfigInput = {}, options: DvaeOptions = {}) {
    super();
    const { logit_laplace_eps, ...arch } = resolveArch(config);
    this.arch = Object.freeze(arch);
    this.eps = logit_laplace_eps;
    const rng = options.rng ?? new Philox(options.seed ?? 0);
    this.encoder = this.addModule('encoder', new Encoder(this.arch, rng));
    this.decoder = this.addModule('decoder', new Decoder(this.arch, rng));
  }

  /** Image side / token grid side. */
  get downsampleFactor(): number {
    return downsampleFactor(this.arch);
  }

  /** Encoder logits for images x (B, C, H, W) in [0, 1]: (B, V, h, w). Records gradients unless under noGrad. */
  logits(x: Tensor): Tensor {
    return this.encoder.forward(mapPixels(x, this.eps));
  }

  /** Images (B, C, H, W) in [0, 1] -> argmax codes i32 (B, h, w) (no gumbel noise: what the prior trains on). */
  encode(x: Tensor): Tensor {
    return noGrad(() => tidy(() => argmaxCodes(this.logits(x))));
  }

  /** Decoder stats (B, 2C, H, W) -> images (B, C, H, W) in [0, 1]: unmap(sigmoid(mu)). */
  statsToImages(stats: Tensor): Tensor {
    const [B, C2, H, W] = stats.shape;
    const C = C2 / 2;
    if (C !== this.arch.input_channels) throw new Error(`dalle: dVAE stats must have ${2 * this.arch.input_channels} channels, got ${shapeStr(stats.shape)}`);
    return unmapPixels(sigmoid(slice(stats, [[0, B], [0, C], [0, H], [0, W]])), this.eps);
  }

  /**
   * Codes i32 (B, h, w) -> images (B, C, H, W) in [0, 1]. Codes on the host are range-checked here; codes on a GPU
   * are not read back for it (that would be a copy per batch): they come from encode, or were checked on the host by
   * whoever moved them (checkDvaeCodes), and the embedding kernel checks its indices itself.
   */
  decode(codes: Tensor): Tensor {
    if (codes.device === 'cpu') checkDvaeCodes(codes.toArray(), this.arch.vocab_size);
    return noGrad(() => tidy(() => this.statsToImages(this.decoder.forwardCodes(codes))));
  }

  /** decode(encode(x)). */
  reconstruct(x: Tensor): Tensor {
    return tidy(() => this.decode(this.encode(x)));
  }
}

/** Every code in [0, V): a code outside the codebook is an error naming it and its position. */
export function checkDvaeCodes(codes: ArrayLike<number>, V: number): void {
  for (let i = 0; i < codes.length; i++) {
    if (!(codes[i] >= 0 && codes[i] < V)) throw new Error(`dalle: dVAE code ${codes[i]} at ${i} is outside [0, ${V})`);
  }
}
