/**
 * The dVAE's codebook during training: the k-means init of the codebook (train.codebook_init: kmeans) and the usage
 * statistics of its metrics lines. perplexity = exp(H(p)), p the codes' frequencies in the usage window (V when every
 * code is equally used, 1 when one code is); dead codes = codes not seen in the window.
 */
import { DvaeConfig } from '../config';
import { DataLoader } from '../data/loader';
import type { DataSource } from '../data/sources/types';
import { EventSink } from '../events';
import { Dvae, kmeansCodebookInit } from '../models/dvae';
import { Philox } from '../tensor';

/** The k-means codebook init's images and draws: Philox(seed).fork(this) ('kmin'), apart from the training data order. */
export const CODEBOOK_INIT_STREAM_ID = 0x6b6d696e;
/** Log-step batches in the codebook-usage window. */
export const USAGE_WINDOW = 4;

/** train.codebook_init: kmeans: clusters the encoder features of train.codebook_init_images images of the source. */
export async function initCodebook(
  model: Dvae, source: DataSource, config: DvaeConfig, loaderOptions: { resolution: number; maxInputPixels: number; prefetchBatches: number }, events: EventSink,
): Promise<void> {
  const t = config.train;
  const count = Math.min(t.codebook_init_images, source.records.length);
  events.emit({ type: 'stage', name: 'codebook init', detail: `k-means of the encoder features of ${count} images` });
  const rng = new Philox(config.runtime.seed).fork(CODEBOOK_INIT_STREAM_ID);
  const batchSize = Math.min(32, count);
  const loader = new DataLoader(source, { ...loaderOptions, batchSize, seed: config.runtime.seed ^ CODEBOOK_INIT_STREAM_ID, events });
  const R = config.data.resolution;
  const C = model.arch.input_channels;
  const images = new Float32Array(count * C * R * R);
  try {
    for (let seen = 0; seen < count; ) {
      const batch = await loader.next();
      const take = Math.min(batchSize, count - seen);
      images.set(batch.images.subarray(0, take * C * R * R), seen * C * R * R);
      seen += take;
    }
  } finally {
    loader.close();
  }
  const r = kmeansCodebookInit(model, images, [count, C, R, R], { rng, logitStd: t.codebook_init_logit_std });
  events.emit({ type: 'log', level: 'info', message: `codebook init: k-means of ${r.vectors} feature vectors, perplexity ${r.perplexity.toFixed(1)} of ${model.arch.vocab_size}, ${r.deadCodes} empty codes` });
}

/** perplexity exp(H) of the pooled code histogram, and the codes never seen. */
export function codebookUsage(histograms: readonly (readonly number[])[], V: number): { perplexity: number; deadCodes: number } {
  const total = new Float64Array(V);
  for (const h of histograms) for (let v = 0; v < V; v++) total[v] += h[v];
  let n = 0;
  for (const c of total) n += c;
  let entropy = 0;
  let dead = 0;
  for (const c of total) {
    if (c === 0) dead++;
    else entropy -= (c / n) * Math.log(c / n);
  }
  return { perplexity: n > 0 ? Math.exp(entropy) : 0, deadCodes: dead };
}
