// Reconstruction quality of a dVAE: PSNR of decode(encode(x)) against x (pixels in [0, 1], peak 1), and codebook
// usage (perplexity of the code histogram, dead codes). PSNR is averaged per image in dB, as image papers report it.
// Key: B = batch, C = channels, H, W = image side, V = codebook size.

/** PSNR in dB of one image pair (same length, values in [0, 1]); Infinity when identical. */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length === 0) throw new Error(`dalle: psnr of ${a.length} and ${b.length} values`);
  let se = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    se += d * d;
  }
  const mse = se / a.length;
  return mse === 0 ? Infinity : -10 * Math.log10(mse);
}

/** Running statistics over batches of (original, reconstruction, codes). */
export class ReconMeter {
  private psnrSum = 0;
  private images = 0;
  private readonly counts: Float64Array;

  constructor(readonly vocabSize: number) {
    this.counts = new Float64Array(vocabSize);
  }

  /** original, reconstruction: (B, C, H, W) flattened; codes: (B, h, w) flattened. */
  add(original: ArrayLike<number>, reconstruction: ArrayLike<number>, batch: number, codes?: ArrayLike<number>): void {
    const per = original.length / batch;
    if (!Number.isInteger(per) || reconstruction.length !== original.length) {
      throw new Error(`dalle: ReconMeter: ${original.length} and ${reconstruction.length} values for a batch of ${batch}`);
    }
    for (let b = 0; b < batch; b++) {
      const o = Array.prototype.slice.call(original, b * per, (b + 1) * per) as number[];
      const r = Array.prototype.slice.call(reconstruction, b * per, (b + 1) * per) as number[];
      const p = psnr(o, r);
      this.psnrSum += Number.isFinite(p) ? p : 100; // an exact copy counts as 100 dB rather than poisoning the mean
      this.images++;
    }
    if (codes) for (let i = 0; i < codes.length; i++) this.counts[codes[i]]++;
  }

  result(): { images: number; psnr: number; perplexity: number; deadCodes: number } {
    const total = this.counts.reduce((s, c) => s + c, 0);
    let entropy = 0;
    let dead = 0;
    for (const c of this.counts) {
      if (c === 0) {
        dead++;
        continue;
      }
      const q = c / total;
      entropy -= q * Math.log(q);
    }
    return {
      images: this.images,
      psnr: this.images ? this.psnrSum / this.images : NaN,
      perplexity: total ? Math.exp(entropy) : NaN,
      deadCodes: total ? dead : this.vocabSize,
    };
  }
}
