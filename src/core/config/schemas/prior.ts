/**
 * The transformer prior config. Defaults are the paper's numbers (Ramesh et al. 2021, Appendix B): a 64-layer sparse
 * transformer over 256 BPE text tokens followed by a 32x32 grid of dVAE image tokens.
 * d_model = n_heads * head_dim (paper: 62 * 64 = 3968). The attention layout is derived, not configured: the last layer
 * convolutional, layer i column when i % 4 == 1, row otherwise (the paper's Appendix B).
 */
import { bool, int, num, odd, str } from '../fields';
import { ConfigOf, defineConfig } from '../schema';
import { distributedTrainFields } from './distributed';
import { runtimeSection } from './runtime';

export const priorConfig = defineConfig(
  'prior',
  'Prior: a sparse transformer that models text tokens then image tokens (DALL-E, Appendix B).',
  {
    runtime: runtimeSection,
    model: {
      n_layers: int(64, 'transformer blocks (paper: 64)', { min: 1 }),
      n_heads: int(62, 'attention heads per block (paper: 62)', { min: 1 }),
      head_dim: int(64, 'width of one head; d_model = n_heads * head_dim (paper: 64)', { min: 1 }),
      text_len: int(256, 'text positions; short captions get per-position pad tokens (paper: 256)', { min: 1 }),
      text_vocab: int(16384, 'BPE vocabulary size, pad tokens excluded (paper: 16384)', { min: 2 }),
      image_grid: int(32, 'image tokens per side: the dVAE grid, 32x32 = 1024 tokens (paper: 32)', { min: 1 }),
      image_vocab: int(8192, 'image token vocabulary: the dVAE codebook size (paper: 8192)', { min: 2 }),
      conv_kernel: int(11, 'side of the convolutional mask of the last layer, odd (paper: 11)', { min: 1, check: odd }),
    },
    data: {
      path: str(null, 'the data set: a folder with train/ (and val/) splits as `dalle dataset emoji` writes, or one folder/manifest/tar source'),
      dvae: str(null, 'the trained dVAE run (or checkpoint) that encodes the images into token grids (cached beside it)'),
      bpe_dropout: num(0.1, 'chance of dropping each BPE merge in training (paper: 0.1)', { min: 0, lessThan: 1 }),
      lowercase: bool(true, 'captions are lower-cased before BPE (paper: yes)'),
    },
    train: {
      steps: int(430_000, 'total updates (paper: 430,000)', { min: 1 }),
      batch_size: int(1024, 'caption-image pairs per update (paper: 1024)', { min: 1 }),
      lr: num(4.5e-4, 'peak Adam step size, reached after the warmup (paper: 4.5e-4)', { greaterThan: 0 }),
      // The paper halved lr five times on loss plateaus, ending at lr/32; we cosine-decay to the same end value.
      lr_min: num(4.5e-4 / 32, 'step size at the end of training (paper: lr/32)', { min: 0 }),
      warmup_steps: int(5_000, 'linear warmup of the step size from 0 (paper: 5,000)', { min: 0 }),
      beta1: num(0.9, 'Adam first-moment decay (paper: 0.9)', { min: 0, lessThan: 1 }),
      beta2: num(0.96, 'Adam second-moment decay (paper: 0.96)', { min: 0, lessThan: 1 }),
      eps: num(1e-8, 'Adam denominator epsilon (paper: 1e-8)', { greaterThan: 0 }),
      weight_decay: num(4.5e-2, 'weight decay, not on gains, biases or embeddings (paper: 4.5e-2)', { min: 0 }),
      grad_clip: num(4, 'clip the global gradient norm to this; 0 = off (paper: 4)', { min: 0 }),
      caption_dropout: num(0, 'chance of replacing a caption by all padding tokens in training, for classifier-free guidance (paper: 0)', { min: 0, lessThan: 1 }),
      text_loss_weight: num(1 / 8, 'weight of the text cross-entropy (paper: 1/8)', { min: 0 }),
      image_loss_weight: num(7 / 8, 'weight of the image cross-entropy, what we generate (paper: 7/8)', { min: 0 }),
      // Per-resblock fp16 gradient scaling (paper B.2); init, min and max are multiplied by the data-parallel workers.
      grad_scale: {
        init: num(2 ** 13, 'initial per-resblock gradient scale (paper: 2^13)', { greaterThan: 0 }),
        growth: num(2 ** (1 / 1000), 'scale factor after each finite update (paper: 2^(1/1000))', { min: 1 }),
        backoff: num(Math.SQRT2, 'divisor after a non-finite gradient (update skipped) (paper: sqrt 2)', { min: 1 }),
        min: num(2 ** 7, 'smallest scale (paper: 2^7)', { greaterThan: 0 }),
        max: num(2 ** 24, 'largest scale (paper: 2^24)', { greaterThan: 0 }),
      },
      recompute: bool(false, 'recompute each block\'s activations in backward instead of keeping them: less memory for one more forward of each block per step (paper: yes)'),
      checkpoint_every: int(5_000, 'updates between checkpoints: a crash loses at most this much', { min: 1 }),
      sample_every: int(5_000, 'updates between sample grids for fixed captions in samples/', { min: 1 }),
      log_every: int(100, 'updates between metrics.jsonl lines', { min: 1 }),
      val_every: int(5_000, 'updates between validation losses (val split) in metrics.jsonl', { min: 1 }),
      val_batches: int(0, 'batches of the val split per validation; 0 = the whole split', { min: 0 }),
      ...distributedTrainFields,
    },
  },
  [
    {
      keyPath: 'model.conv_kernel',
      related: ['model.image_grid'],
      check: ({ model: m }) =>
        m.conv_kernel <= 2 * m.image_grid - 1
          ? undefined
          : `must be at most 2 * model.image_grid - 1 = ${2 * m.image_grid - 1}, got ${m.conv_kernel}`,
    },
    {
      keyPath: 'train.lr_min',
      related: ['train.lr'],
      check: (c) =>
        c.train.lr_min <= c.train.lr ? undefined : `must be <= train.lr (${c.train.lr}), got ${c.train.lr_min}`,
    },
    {
      keyPath: 'train.grad_scale.init',
      related: ['train.grad_scale.min', 'train.grad_scale.max'],
      check: ({ train: { grad_scale: s } }) =>
        s.min <= s.init && s.init <= s.max ? undefined : `must lie in [min, max] = [${s.min}, ${s.max}], got ${s.init}`,
    },
  ],
);

export type PriorConfig = ConfigOf<typeof priorConfig>;
