/**
 * A CLIP's embeddings: L2-normalised text and image embeddings, in batches, without gradients (what scoring,
 * retrieval, reranking and FID features need). Key: N = items, E = embedding size, L = context, R = image side.
 */
import { Tensor, noGrad, tidy } from '../../tensor';
import type { TextTokenizer } from '../../text';
import { Clip, l2Normalize } from './model';

/** The rows of packed token ids, one after another: (B, L) for Tensor.from. */
export function concatRows(rows: readonly Int32Array[]): Int32Array {
  const out = new Int32Array(rows.reduce((s, r) => s + r.length, 0));
  let o = 0;
  for (const r of rows) {
    out.set(r, o);
    o += r.length;
  }
  return out;
}

/** L2-normalised text embeddings (N, E) of captions, in batches. */
export function embedTexts(clip: { readonly model: Clip; readonly tokenizer: TextTokenizer }, captions: readonly string[], batch = 64): Float32Array {
  const { model } = clip;
  const E = model.arch.embed;
  const out = new Float32Array(captions.length * E);
  for (let start = 0; start < captions.length; start += batch) {
    const part = captions.slice(start, start + batch);
    const packed = part.map((c) => model.packTokens(clip.tokenizer.encode(c)));
    const data = noGrad(() =>
      tidy(() => {
        const tokens = Tensor.from(concatRows(packed.map((p) => p.row)), [part.length, model.arch.context], 'i32', model.device);
        return l2Normalize(model.encodeText(tokens, packed.map((p) => p.end))).toArray() as Float32Array;
      }),
    );
    out.set(data, start * E);
  }
  return out;
}

/** L2-normalised image embeddings (N, E) of pixels (N, 3, R, R) in [0, 1]. */
export function embedImages(model: Clip, pixels: Float32Array, count: number): Float32Array {
  return noGrad(() =>
    tidy(() => {
      const R = model.arch.resolution;
      return l2Normalize(model.encodeImage(Tensor.from(pixels, [count, 3, R, R], 'f32', model.device))).toArray() as Float32Array;
    }),
  );
}
