/**
 * The negative log-likelihood of a trained prior on a data set of captioned images: bits (and nats) per text token and
 * per image token, as the prior's own validation loss measures them (eval/prior-split-loss.ts `validationLoss`, which its
 * training uses too): each image's first caption BPE-encoded without dropout, truncated to text_len and padded; the
 * image encoded by the prior's dVAE into argmax codes (read from the dVAE's token cache when one exists for this data
 * set, else encoded in memory and not cached); text positions 1..L-1 (padding tokens included, as the prior is
 * trained) and all N image tokens scored by one forward each; per-batch means summed in float64, weighted by the
 * batch's examples.
 *
 * Bits per image dimension: the image tokens' total bits divided by the image's 3 H W pixel values. It is the prior's
 * cost of the dVAE code only; the dVAE decoder's reconstruction term of the paper's evidence lower bound is left out,
 * so it is not a likelihood of the pixels.
 * Key: N = images, L = text_len, G = grid side, R = image side.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../data/errors';
import { SkipSummary } from '../data/skips';
import { TokenSplit, encodeTokenSplit, findTokenCache, tokenCacheSplits } from '../data/token-cache';
import { EventSink, silentSink } from '../events';
import { CheckpointError } from '../checkpoint';
import type { TrainedDvae } from '../models/dvae/load';
import type { TrainedPrior } from '../models/prior/load';
import { validationLoss } from './prior-split-loss';

export interface PriorNllOptions {
  readonly prior: TrainedPrior;
  readonly dvae: TrainedDvae;
  /** A data set: a folder with train/ (and val/) sub-folders, or any one captioned data source. */
  readonly data: string;
  /** With train/ and val/ sub-folders: which one (default val). Ignored for a single data source. */
  readonly split?: 'train' | 'val';
  /** Use only the first N images (0 = all). */
  readonly limit?: number;
  /** Examples per forward (memory and speed only). */
  readonly batchSize?: number;
  readonly events?: EventSink;
}

export interface PriorNllResult {
  readonly prior: string;
  readonly prior_step: number;
  readonly dvae: string;
  readonly dvae_step: number;
  /** The images measured: the data source and how many. */
  readonly data: string;
  readonly images: number;
  /** The token cache the grids came from, or null when they were encoded here. */
  readonly token_cache: string | null;
  /** Text positions scored per example (L - 1) and image tokens per example (G^2). */
  readonly text_tokens_per_example: number;
  readonly image_tokens_per_example: number;
  /** Captions longer than L tokens (cut to L, as in training). */
  readonly captions_truncated: number;
  readonly nats_per_text_token: number;
  readonly bits_per_text_token: number;
  readonly nats_per_image_token: number;
  readonly bits_per_image_token: number;
  /** Bits of a whole image's token grid, and those bits per pixel value (3 R^2): the code's cost only (see above). */
  readonly bits_per_image: number;
  readonly image_bits_per_dim: number;
  /** The prior's training objective on this data: text_weight * text + image_weight * image, nats. */
  readonly loss: number;
  readonly skipped?: SkipSummary;
}

/** Examples per validationLoss call, so progress can be reported between calls. */
const CHUNK_BATCHES = 4;

/** The token grids and captions of the data the options name: from the dVAE's token cache, or encoded here. */
async function dataSplit(options: PriorNllOptions, events: EventSink): Promise<{ split: TokenSplit; source: string; cache: string | null; skipped?: SkipSummary }> {
  const { dvae, data } = options;
  if (!fs.existsSync(data)) {
    throw new DataError(`${data} does not exist`, 'give --data a folder of images with .txt captions, a manifest, .tar shards, or a data set folder with train/ and val/');
  }
  const splits = tokenCacheSplits(data);
  let name: 'train' | 'val' = 'train';
  let source = data;
  if (splits.length > 1 || path.resolve(splits[0].path) !== path.resolve(data)) {
    name = options.split ?? (splits.some((s) => s.name === 'val') ? 'val' : 'train');
    const found = splits.find((s) => s.name === name);
    if (!found) throw new DataError(`${data} has no ${name}/ sub-folder`, `give --split ${splits.map((s) => s.name).join(' or ')}, or --data the folder itself`);
    source = found.path;
  }
  const cache = await findTokenCache({ data, dvae, events });
  if (cache) {
    const split = name === 'val' ? cache.val : cache.train;
    if (split) return { split, source, cache: cache.dir };
  }
  events.emit({ type: 'stage', name: 'encoding images', detail: `${source} with ${dvae.checkpoint} (argmax codes; no token cache for this data set, none written)` });
  const encoded = await encodeTokenSplit(dvae, source, events, options.limit ?? 0);
  return { split: encoded.split, source, cache: null, skipped: encoded.skipped };
}

/** Measures the prior's NLL per text and per image token on the data (see the file comment). */
export async function priorNll(options: PriorNllOptions): Promise<PriorNllResult> {
  const events = options.events ?? silentSink;
  const { prior, dvae } = options;
  const m = prior.config.model;
  if (dvae.gridSide !== m.image_grid || dvae.model.arch.vocab_size !== m.image_vocab) {
    throw new CheckpointError(
      `the dVAE ${dvae.checkpoint} makes ${dvae.gridSide}x${dvae.gridSide} grids of ${dvae.model.arch.vocab_size} codes, but the prior ${prior.checkpoint} reads ${m.image_grid}x${m.image_grid} grids of ${m.image_vocab}`,
      'pass --dvae the dVAE run the prior was trained on (data.dvae in the prior run\'s config.yaml)',
    );
  }
  const { split: whole, source, cache, skipped } = await dataSplit(options, events);
  const G = whole.shape[1];
  const n = whole.shape[0];
  const count = options.limit ? Math.min(n, options.limit) : n;
  if (count < 1) throw new DataError(`${source} has no captioned image to measure`, '`dalle dataset inspect PATH` shows what is skipped and why');
  const L = m.text_len;
  let truncated = 0;
  const encode = (caption: string): number[] => {
    const ids = prior.tokenizer.encode(caption); // no BPE dropout
    if (ids.length > L) {
      truncated++;
      return ids.slice(0, L);
    }
    return ids;
  };
  const weights = { text: prior.config.train.text_loss_weight, image: prior.config.train.image_loss_weight };
  const B = Math.max(1, options.batchSize ?? 8);
  const chunk = B * CHUNK_BATCHES;
  let text = 0; // float64 sums of per-token means, weighted by examples
  let image = 0;
  const task = 'nll';
  for (let start = 0; start < count; start += chunk) {
    const end = Math.min(count, start + chunk);
    const part: TokenSplit = {
      tokens: whole.tokens.subarray(start * G * G, end * G * G),
      shape: [end - start, G, G],
      captions: whole.captions.slice(start, end),
    };
    const r = validationLoss(prior.model, part, B, 0, encode, L, m.text_vocab, weights);
    text += r.val_text_loss * r.val_examples;
    image += r.val_image_loss * r.val_examples;
    events.emit({ type: 'progress', task, step: end, total: count, unit: 'image' });
  }
  events.emit({ type: 'done', task });
  const natsText = text / count;
  const natsImage = image / count;
  const bitsImage = natsImage / Math.LN2;
  return {
    prior: prior.checkpoint,
    prior_step: prior.step,
    dvae: dvae.checkpoint,
    dvae_step: dvae.step,
    data: source,
    images: count,
    token_cache: cache,
    text_tokens_per_example: L - 1,
    image_tokens_per_example: G * G,
    captions_truncated: truncated,
    nats_per_text_token: natsText,
    bits_per_text_token: natsText / Math.LN2,
    nats_per_image_token: natsImage,
    bits_per_image_token: bitsImage,
    bits_per_image: bitsImage * G * G,
    image_bits_per_dim: (bitsImage * G * G) / (3 * dvae.resolution * dvae.resolution),
    loss: weights.text * natsText + weights.image * natsImage,
    ...(skipped ? { skipped } : {}),
  };
}
