// Data-dependent initialisation of the dVAE's codebook (train.codebook_init: kmeans; not in the paper, whose 3M updates
// on 64 GPUs can afford to grow their code usage slowly).
//
// Why: the encoder's last layer is a 1x1 conv, logit_v = w_v . f + b_v over the features f of a grid cell. With random
// weights a handful of codes have the largest logits at almost every cell, the decoder only learns those codes' inputs,
// and a short run settles on a few dozen codes of the book (measured: perplexity 4-25 of 1024, 17-20 dB). k-means on
// the features of real images, written into that conv as logit_v = s (2 c_v . f - |c_v|^2) (argmax = the nearest
// centroid c_v; the |f|^2 term is the same for every code), starts training with every code owning a region of
// feature space (perplexity ~850 of 1024 on emoji). The architecture is unchanged: only the initial w and b differ.
// Key: N = images, D = feature channels (2^(G-1) n_hid), V = vocab_size, n = feature vectors clustered.
import { matmul } from '../../ops';
import { Philox, Tensor, noGrad, tidy } from '../../tensor';
import type { Dvae } from './dvae';
import { mapPixels } from './loss';

export interface KmeansInitOptions {
  /** Feature vectors (grid cells) clustered, drawn evenly from the images (default 60,000). */
  samples?: number;
  /** Lloyd iterations (default 12). */
  iterations?: number;
  /** Mean standard deviation of the initial logits across codes at a cell (default 5: sharp, not one-hot, at tau 1). */
  logitStd?: number;
  /** Images per encoder forward (default 32). */
  batchSize?: number;
  rng: Philox;
}

export interface KmeansInitResult {
  /** Feature vectors clustered. */
  vectors: number;
  /** exp(entropy) of the final assignment of those vectors: how evenly the book is spread. */
  perplexity: number;
  /** Codes no vector was assigned to in the final iteration. */
  deadCodes: number;
  /** The factor s of logit_v = s (2 c_v . f - |c_v|^2). */
  scale: number;
}

/** Encoder features of images (N, C, H, W) in [0, 1], a few random cells per image: (n, D) row-major. */
export function sampleEncoderFeatures(model: Dvae, images: Float32Array, shape: readonly number[], samples: number, rng: Philox, batchSize = 32): { data: Float32Array; rows: number; dim: number } {
  const [N, C, H, W] = shape;
  if (images.length !== N * C * H * W) throw new Error(`dalle: codebook init got ${images.length} pixel values for shape (${shape.join(', ')})`);
  const f = model.downsampleFactor;
  const cells = (H / f) * (W / f);
  const perImage = Math.max(1, Math.min(cells, Math.ceil(samples / N)));
  const D = model.encoder.output.inChannels;
  const out = new Float32Array(N * perImage * D);
  let rows = 0;
  for (let start = 0; start < N; start += batchSize) {
    const b = Math.min(batchSize, N - start);
    const feats = noGrad(() =>
      tidy(() => {
        // Images in on the model's device, features out to the host (the k-means below runs there: a one-time init).
        const x = Tensor.from(images.subarray(start * C * H * W, (start + b) * C * H * W), [b, C, H, W], 'f32', model.device);
        return model.encoder.features(mapPixels(x, model.eps)).toArray() as Float32Array; // (b, D, h, w)
      }),
    );
    for (let i = 0; i < b; i++) {
      const picks = rng.randint(perImage, cells);
      for (const p of picks) {
        for (let d = 0; d < D; d++) out[rows * D + d] = feats[(i * D + d) * cells + p];
        rows++;
      }
    }
  }
  return { data: out.subarray(0, rows * D), rows, dim: D };
}

/** For rows X (n, D) and centroids (V, D): the best code of each row by 2 c.x - |c|^2, and that score's spread. */
function assign(x: Float32Array, n: number, D: number, centroids: Float32Array, V: number, codes: Int32Array): void {
  const norms = new Float32Array(V);
  for (let v = 0; v < V; v++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += centroids[v * D + d] ** 2;
    norms[v] = s;
  }
  const CHUNK = 4096;
  const cT = Tensor.from(centroids, [V, D]);
  try {
    for (let r0 = 0; r0 < n; r0 += CHUNK) {
      const r = Math.min(CHUNK, n - r0);
      const dots = noGrad(() => tidy(() => matmul(Tensor.from(x.subarray(r0 * D, (r0 + r) * D), [r, D]), cT, { transB: true }).toArray() as Float32Array)); // (r, V)
      for (let i = 0; i < r; i++) {
        let best = 0;
        let bestScore = -Infinity;
        for (let v = 0; v < V; v++) {
          const score = 2 * dots[i * V + v] - norms[v];
          if (score > bestScore) {
            bestScore = score;
            best = v;
          }
        }
        codes[r0 + i] = best;
      }
    }
  } finally {
    cT.dispose();
  }
}

/**
 * k-means (Lloyd, float64 sums) of the encoder's features on `images`, written into the encoder's output conv.
 * Deterministic given the rng. Returns how evenly the resulting book splits the clustered features.
 */
export function kmeansCodebookInit(model: Dvae, images: Float32Array, shape: readonly number[], options: KmeansInitOptions): KmeansInitResult {
  const { rng } = options;
  const iterations = options.iterations ?? 12;
  const logitStd = options.logitStd ?? 5;
  const V = model.arch.vocab_size;
  const { data: x, rows: n, dim: D } = sampleEncoderFeatures(model, images, shape, options.samples ?? 60_000, rng, options.batchSize);
  if (n < V) throw new Error(`dalle: codebook init needs at least vocab_size = ${V} feature vectors, got ${n} from ${shape[0]} images: use more images (train.codebook_init_images)`);

  // Start from V distinct random rows.
  const centroids = new Float32Array(V * D);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < V; i++) {
    const j = i + Math.floor(rng.uniform() * (n - i));
    [order[i], order[j]] = [order[j], order[i]];
    centroids.set(x.subarray(order[i] * D, (order[i] + 1) * D), i * D);
  }
  const codes = new Int32Array(n);
  const counts = new Float64Array(V);
  for (let it = 0; it < iterations; it++) {
    assign(x, n, D, centroids, V, codes);
    const sums = new Float64Array(V * D);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const c = codes[i];
      counts[c]++;
      for (let d = 0; d < D; d++) sums[c * D + d] += x[i * D + d];
    }
    for (let v = 0; v < V; v++) {
      if (counts[v] > 0) {
        for (let d = 0; d < D; d++) centroids[v * D + d] = sums[v * D + d] / counts[v];
      } else {
        const row = Math.min(n - 1, Math.floor(rng.uniform() * n)); // an empty cluster restarts at a random vector
        centroids.set(x.subarray(row * D, (row + 1) * D), v * D);
      }
    }
  }
  assign(x, n, D, centroids, V, codes);
  counts.fill(0);
  for (const c of codes) counts[c]++;
  let entropy = 0;
  let dead = 0;
  for (const c of counts) {
    if (c === 0) dead++;
    else entropy -= (c / n) * Math.log(c / n);
  }

  // Scale: the logits' standard deviation across codes, averaged over (up to) 2,000 vectors, becomes logitStd.
  const norms = new Float64Array(V);
  for (let v = 0; v < V; v++) for (let d = 0; d < D; d++) norms[v] += centroids[v * D + d] ** 2;
  const probe = Math.min(n, 2000);
  let stdSum = 0;
  for (let i = 0; i < probe; i++) {
    let s1 = 0;
    let s2 = 0;
    for (let v = 0; v < V; v++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += x[i * D + d] * centroids[v * D + d];
      const score = 2 * dot - norms[v];
      s1 += score;
      s2 += score * score;
    }
    stdSum += Math.sqrt(Math.max(0, s2 / V - (s1 / V) ** 2));
  }
  const meanStd = stdSum / probe;
  const scale = meanStd > 0 ? logitStd / meanStd : 1;

  const conv = model.encoder.output; // w (V, D, 1, 1), b (V)
  const w = new Float32Array(V * D);
  for (let i = 0; i < V * D; i++) w[i] = 2 * scale * centroids[i];
  const b = new Float32Array(V);
  for (let v = 0; v < V; v++) b[v] = -scale * norms[v];
  writeParameter(conv.w, w);
  writeParameter(conv.b, b);
  return { vectors: n, perplexity: Math.exp(entropy), deadCodes: dead, scale };
}

function writeParameter(t: Tensor, values: Float32Array): void {
  if (t.dtype !== 'f32' || !t.isContiguous() || t.size !== values.length) throw new Error(`dalle: cannot write ${values.length} values into ${t}`);
  t.backend.copyIn(t.address, values);
}
