/**
 * Exact data-parallel gradients: every parameter's gradient becomes the mean over ranks, reduced in buckets of about
 * `bucketBytes` that start as soon as backward has completed every gradient in them, so communication overlaps with
 * the rest of backward (the scheme of PyTorch's DistributedDataParallel).
 *
 * Buckets hold parameters in reverse registration order, because backward completes the last layers' gradients
 * first. Each rank runs the same model on its part of the global batch, so backward completes the same gradients in
 * the same order everywhere, and every rank starts the same buckets in the same order (the collective requires it).
 * A bucket whose parameters did not all get a gradient in this backward (a frozen encoder, an unused embedding row
 * block) starts in finish(), in bucket order, with the gradients that exist: the same ones on every rank.
 *
 * The sum is taken by the collective, then divided by the world size: each rank's loss is the mean over its
 * batch_size / N examples, so the mean of the ranks' gradients is the gradient of the global batch's mean loss.
 */
import { Tensor, scaleInPlace } from '../tensor';
import { Collective } from './collective';
import { GradientSync } from './gradient-sync';

interface Bucket {
  readonly params: readonly Tensor[];
  /** Parameters whose gradient is complete in this backward. */
  ready: number;
  started?: Promise<void>;
}

export class BucketedAllReduce implements GradientSync {
  private readonly buckets: Bucket[] = [];
  private readonly bucketOf = new Map<Tensor, Bucket>();
  private readonly seen = new Set<Tensor>();

  /** `params` in registration order (the optimizer's); each bucket at most `bucketBytes` unless one tensor is larger. */
  constructor(params: readonly Tensor[], private readonly collective: Collective, bucketBytes: number) {
    if (!(bucketBytes > 0)) throw new RangeError(`dalle: bucket size must be > 0 bytes, got ${bucketBytes}`);
    let current: Tensor[] = [];
    let bytes = 0;
    const close = (): void => {
      if (current.length === 0) return;
      const bucket: Bucket = { params: current, ready: 0 };
      for (const p of current) this.bucketOf.set(p, bucket);
      this.buckets.push(bucket);
      current = [];
      bytes = 0;
    };
    for (let i = params.length - 1; i >= 0; i--) {
      const p = params[i];
      if (this.bucketOf.has(p) || current.includes(p)) throw new Error('dalle: a parameter is listed twice for gradient reduction');
      if (bytes > 0 && bytes + 4 * p.size > bucketBytes) close();
      current.push(p);
      bytes += 4 * p.size;
    }
    close();
  }

  /** How many buckets the parameters make (for tests and the run's log). */
  get bucketCount(): number {
    return this.buckets.length;
  }

  readonly onGradientReady = (param: Tensor): void => {
    const bucket = this.bucketOf.get(param);
    if (!bucket) return; // a leaf that is not a parameter (checkpoint.ts's recompute leaves)
    if (this.seen.has(param)) {
      throw new Error(
        'dalle: a parameter\'s gradient was completed twice in one step (it is read by two recomputed blocks), so it cannot be reduced while backward runs; train without train.recompute on several ranks',
      );
    }
    this.seen.add(param);
    bucket.ready++;
    if (bucket.ready === bucket.params.length) this.start(bucket);
  };

  private start(bucket: Bucket): void {
    const buffers = bucket.params.filter((p) => p.grad).map((p) => ({ address: (p.grad as Tensor).address, count: (p.grad as Tensor).size }));
    bucket.started = buffers.length > 0 ? this.collective.allReduceBuffers(buffers, 'sum') : Promise.resolve();
  }

  async finish(): Promise<void> {
    try {
      for (const bucket of this.buckets) if (!bucket.started) this.start(bucket);
      // Every bucket is awaited (even after one fails) so no reduction is left writing into a gradient.
      const results = await Promise.allSettled(this.buckets.map((b) => b.started));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      const N = this.collective.worldSize;
      if (N > 1) for (const bucket of this.buckets) for (const p of bucket.params) if (p.grad) scaleInPlace(p.grad, 1 / N);
    } finally {
      for (const bucket of this.buckets) {
        bucket.ready = 0;
        bucket.started = undefined;
      }
      this.seen.clear();
    }
  }

  /** Bytes handed to the all-reduces per update: every gradient, in f32. */
  metrics(): Record<string, number> {
    let bytes = 0;
    for (const bucket of this.buckets) for (const p of bucket.params) if (p.grad) bytes += 4 * p.size;
    return { allreduce_bytes: bytes, allreduce_bytes_uncompressed: bytes };
  }

  dispose(): void {}
}
