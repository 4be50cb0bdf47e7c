// A dVAE's reconstruction quality on a data set: every image once, in source order, through decode(encode(x)).
import { DataLoader, openDataSource } from '../data';
import { EventSink } from '../events';
import { Dvae } from '../models/dvae';
import { Tensor, noGrad, tidy } from '../tensor';
import { ReconMeter } from './recon';

export interface DvaeReconOptions {
  resolution: number;
  batchSize?: number;
  /** Stop after this many images (0 = all). */
  limit?: number;
  events?: EventSink;
}

export interface DvaeReconResult {
  images: number;
  psnr: number;
  perplexity: number;
  deadCodes: number;
  skipped: number;
}

export async function evaluateDvaeRecon(dvae: Dvae, dataPath: string, options: DvaeReconOptions): Promise<DvaeReconResult> {
  const source = await openDataSource(dataPath);
  const total = options.limit ? Math.min(options.limit, source.records.length) : source.records.length;
  const batchSize = Math.min(options.batchSize ?? 32, Math.max(1, total));
  const loader = new DataLoader(source, { batchSize, resolution: options.resolution, seed: 0, shuffle: false });
  const meter = new ReconMeter(dvae.arch.vocab_size);
  try {
    let seen = 0;
    while (seen < total) {
      const batch = await loader.next();
      const take = Math.min(batchSize, total - seen);
      noGrad(() =>
        tidy(() => {
          // Pixels in on the dVAE's device; codes and reconstructions out (the meter runs on the host).
          const x = Tensor.from(batch.images, batch.shape, 'f32', dvae.device);
          const codes = dvae.encode(x);
          const y = dvae.decode(codes);
          const per = batch.images.length / batchSize;
          const perCode = codes.size / batchSize;
          meter.add(batch.images.subarray(0, take * per), y.toArray().subarray(0, take * per), take,
            codes.toArray().subarray(0, take * perCode));
        }),
      );
      seen += take;
      options.events?.emit({ type: 'progress', task: 'reconstruct', step: seen, total, unit: 'image' });
    }
  } finally {
    loader.close();
  }
  return { ...meter.result(), skipped: source.skipped.total };
}
