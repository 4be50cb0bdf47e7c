/**
 * The dVAE config. Defaults are the paper's numbers (Ramesh et al. 2021, Appendix A) and the released model's
 * hyper-parameters (openai/DALL-E, dall_e/encoder.py and decoder.py), so weights converted from it load unchanged.
 * Widths: encoder groups n_hid, 2n_hid, 4n_hid, 8n_hid; every group but the last halves the side, so the token grid is
 * resolution / 2^(n_groups - 1) (paper: 256 / 8 = 32).
 */
import { bool, int, num, oneOf, str } from '../fields';
import { ConfigOf, defineConfig } from '../schema';
import { distributedTrainFields } from './distributed';
import { runtimeSection } from './runtime';

export const dvaeConfig = defineConfig(
  'dvae',
  'dVAE: compresses an image into a grid of discrete tokens and back (DALL-E, Appendix A).',
  {
    runtime: runtimeSection,
    model: {
      n_hid: int(256, 'width of encoder group 1; later groups are 2x, 4x, 8x wider (released: 256)', { min: 1 }),
      n_groups: int(4, 'resblock groups; all but the last halve the side (released: 4)', { min: 1 }),
      n_blk_per_group: int(2, 'resblocks per group (released: 2)', { min: 1 }),
      vocab_size: int(8192, 'codebook size: one logit per code at each grid cell (paper: 8192)', { min: 2 }),
      input_channels: int(3, 'image channels in, RGB (released: 3)', { min: 1 }),
      n_init: int(128, 'width of the decoder input 1x1 conv from the codes (released: 128)', { min: 1 }),
      logit_laplace_eps: num(0.1, 'pixels go into (eps, 1 - eps) for the logit-Laplace likelihood (paper: 0.1)', {
        greaterThan: 0,
        lessThan: 0.5,
      }),
    },
    data: {
      resolution: int(256, 'side of the square training crops in pixels (paper: 256)', { min: 1 }),
      path: str(null, 'images: a folder (+ .txt captions), a .jsonl/.csv manifest or .tar shards; see dataset inspect'),
      max_input_pixels: int(50_000_000, 'larger images are skipped undecoded: no one file exhausts memory', { min: 1 }),
      prefetch_batches: int(2, 'batches decoding in the background while a step trains, so it never waits', { min: 1 }),
    },
    train: {
      steps: int(3_000_000, 'total updates (paper: 3,000,000)', { min: 1 }),
      batch_size: int(512, 'images per update (paper: 512)', { min: 1 }),
      lr: num(1e-4, 'peak AdamW step size (paper: 1e-4)', { greaterThan: 0 }),
      lr_min: num(1.25e-6, 'step size at the end of the cosine decay (paper: 1.25e-6)', { min: 0 }),
      lr_decay_steps: int(1_200_000, 'updates over which lr decays to lr_min (paper: 1,200,000)', { min: 1 }),
      beta1: num(0.9, 'AdamW first-moment decay (paper: 0.9)', { min: 0, lessThan: 1 }),
      beta2: num(0.999, 'AdamW second-moment decay (paper: 0.999)', { min: 0, lessThan: 1 }),
      eps: num(1e-8, 'AdamW denominator epsilon (paper: 1e-8)', { greaterThan: 0 }),
      weight_decay: num(1e-4, 'decoupled weight decay multiplier (paper: 1e-4)', { min: 0 }),
      kl_weight: num(6.6, 'final KL weight beta; a larger beta spreads code usage (paper: 6.6)', { min: 0 }),
      kl_ramp_steps: int(5_000, 'beta rises from 0 to kl_weight over these updates (paper: 5,000)', { min: 0 }),
      grad_clip: num(0, 'clip the global gradient norm to this; 0 = off (the paper does not clip)', { min: 0 }),
      codebook_init: oneOf(['random', 'kmeans'] as const, 'random', 'initial codebook: random weights (paper), or k-means of the encoder features of real images written into the output conv (see models/dvae/codebook-init.ts)'),
      codebook_init_images: int(1000, 'images whose encoder features train.codebook_init: kmeans clusters', { min: 1 }),
      codebook_init_logit_std: num(5, 'spread of the initial logits across codes after the k-means init', { greaterThan: 0 }),
      decoder_warmup_steps: int(0, 'first updates train only the decoder, on the encoder\'s argmax codes (0 = the paper)', { min: 0 }),
      straight_through: bool(false, 'the decoder sees the one-hot argmax of the relaxed sample, the gradient is the relaxed one (paper: false)'),
      usage_weight: num(0, 'weight of a batch codebook-usage term, per cell; 0 = the paper (see models/dvae/loss.ts)', { min: 0 }),
      recon_loss: oneOf(['logit_laplace', 'gaussian'] as const, 'logit_laplace', 'reconstruction likelihood: logit-Laplace (paper), or a Gaussian of fixed sigma around sigmoid(mu), whose gradient is the squared pixel error PSNR scores (see models/dvae/loss.ts)'),
      recon_sigma: num(0.05, 'the Gaussian\'s standard deviation in the eps-mapped pixel space (train.recon_loss: gaussian)', { greaterThan: 0 }),
      tau_start: num(1, 'gumbel-softmax relaxation temperature at update 0 (paper: 1)', { greaterThan: 0 }),
      tau_end: num(1 / 16, 'temperature after the cosine anneal: nearly one-hot (paper: 1/16)', { greaterThan: 0 }),
      tau_anneal_steps: int(150_000, 'updates over which tau anneals to tau_end (paper: 150,000)', { min: 0 }),
      checkpoint_every: int(5_000, 'updates between checkpoints: a crash loses at most this much', { min: 1 }),
      sample_every: int(5_000, 'updates between reconstruction grids written to samples/', { min: 1 }),
      log_every: int(100, 'updates between metrics.jsonl lines', { min: 1 }),
      ...distributedTrainFields,
    },
  },
  [
    {
      keyPath: 'data.resolution',
      related: ['model.n_groups'],
      check: (c) => {
        const factor = 2 ** (c.model.n_groups - 1);
        return c.data.resolution % factor === 0
          ? undefined
          : `must be a multiple of 2^(model.n_groups - 1) = ${factor} for the encoder's pooling, ` +
              `got ${c.data.resolution}`;
      },
    },
    {
      keyPath: 'train.lr_min',
      related: ['train.lr'],
      check: (c) =>
        c.train.lr_min <= c.train.lr ? undefined : `must be <= train.lr (${c.train.lr}), got ${c.train.lr_min}`,
    },
  ],
);

export type DvaeConfig = ConfigOf<typeof dvaeConfig>;
