/**
 * The prior's loss on a split of token grids and captions: what its training validates on every val_every updates
 * (train/prior-trainer.ts) and `dalle evaluate nll` reports (eval/nll.ts). Key: B = batch, L = text_len, N = grid^2.
 */
import type { TokenSplit } from '../data/token-cache';
import { pickCaption } from '../data/order';
import { Prior, padText } from '../models/prior';
import { Tensor, noGrad, readScalars, tidy } from '../tensor';

/** Image tokens (B, N) of the given examples. */
export function imageTokens(split: TokenSplit, indices: readonly number[]): Int32Array {
  const n = split.shape[1] * split.shape[2];
  const out = new Int32Array(indices.length * n);
  indices.forEach((idx, b) => out.set(split.tokens.subarray(idx * n, (idx + 1) * n), b * n));
  return out;
}

/** Sums of the per-token losses over examples (nats per token x examples) of the batches a part computed. */
export interface SplitLossSums {
  text: number;
  image: number;
  examples: number;
}

/**
 * Mean cross-entropy per text token and per image token over (the first maxBatches batches of) a split, in order,
 * with each image's first caption and no dropout. Nats per token.
 */
export function validationLoss(
  model: Prior, split: TokenSplit, batchSize: number, maxBatches: number, encode: (caption: string) => number[],
  textLen: number, textVocab: number, weights: { text: number; image: number },
): { val_loss: number; val_text_loss: number; val_image_loss: number; val_examples: number } {
  return splitLossMeans(validationLossSums(model, split, batchSize, maxBatches, encode, textLen, textVocab, weights), weights);
}

/** The means of (all parts') sums, as validationLoss reports them. */
export function splitLossMeans(sums: SplitLossSums, weights: { text: number; image: number }): { val_loss: number; val_text_loss: number; val_image_loss: number; val_examples: number } {
  const vt = sums.text / sums.examples;
  const vi = sums.image / sums.examples;
  return { val_loss: weights.text * vt + weights.image * vi, val_text_loss: vt, val_image_loss: vi, val_examples: sums.examples };
}

/**
 * validationLoss's sums over the batches of part `part.index` of `part.count` (batches index, index + count, ...: a
 * data-parallel rank's share of the validation, summed over ranks afterwards); all batches without `part`.
 */
export function validationLossSums(
  model: Prior, split: TokenSplit, batchSize: number, maxBatches: number, encode: (caption: string) => number[],
  textLen: number, textVocab: number, weights: { text: number; image: number }, part = { index: 0, count: 1 },
): SplitLossSums {
  const N = split.shape[1] * split.shape[2];
  const total = maxBatches > 0 ? Math.min(split.shape[0], maxBatches * batchSize) : split.shape[0];
  const sums: SplitLossSums = { text: 0, image: 0, examples: 0 };
  for (let start = part.index * batchSize; start < total; start += part.count * batchSize) {
    const indices: number[] = [];
    for (let i = start; i < Math.min(total, start + batchSize); i++) indices.push(i);
    const B = indices.length;
    const ids = padText(indices.map((i) => encode(pickCaption(split.captions[i], 0))), textLen, textVocab);
    const tokens = imageTokens(split, indices);
    const r = noGrad(() => tidy(() => {
      // A batch in on the model's device, its two losses out (one copy).
      const l = model.loss(Tensor.from(ids, [B, textLen], 'i32', model.device), Tensor.from(tokens, [B, N], 'i32', model.device), weights);
      const [t, i] = readScalars([l.textLoss, l.imageLoss]);
      return { t, i };
    }));
    // Every example has the same token counts, so the per-token mean is the example-weighted mean of batch means.
    sums.text += r.t * B;
    sums.image += r.i * B;
    sums.examples += B;
  }
  return sums;
}
