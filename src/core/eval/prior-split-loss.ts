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

/**
 * Mean cross-entropy per text token and per image token over (the first maxBatches batches of) a split, in order,
 * with each image's first caption and no dropout. Nats per token.
 */
export function validationLoss(
  model: Prior, split: TokenSplit, batchSize: number, maxBatches: number, encode: (caption: string) => number[],
  textLen: number, textVocab: number, weights: { text: number; image: number },
): { val_loss: number; val_text_loss: number; val_image_loss: number; val_examples: number } {
  const N = split.shape[1] * split.shape[2];
  const total = maxBatches > 0 ? Math.min(split.shape[0], maxBatches * batchSize) : split.shape[0];
  let text = 0;
  let image = 0;
  for (let start = 0; start < total; start += batchSize) {
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
    text += r.t * B;
    image += r.i * B;
  }
  const vt = text / total;
  const vi = image / total;
  return { val_loss: weights.text * vt + weights.image * vi, val_text_loss: vt, val_image_loss: vi, val_examples: total };
}
