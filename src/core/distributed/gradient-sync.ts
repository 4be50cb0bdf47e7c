/**
 * How a training step's gradients are made the same on every data-parallel rank. The loop (train/loop.ts) creates one
 * per run from its parameters, calls onGradientReady for each parameter whose gradient backward has finished (so a
 * bucket can be reduced while backward goes on), and awaits finish() after backward, before clipping and the update.
 */
import type { Tensor } from '../tensor';

export interface GradientSync {
  /** A parameter's gradient is complete for this step (called during backward, at most once per parameter). */
  readonly onGradientReady?: (param: Tensor) => void;
  /** Every parameter's gradient is the mean over ranks once this resolves. */
  finish(): Promise<void>;
  /** Fields for the metrics line of the last update (bytes all-reduced); none when nothing was reduced. */
  metrics?(): Record<string, number>;
  dispose(): void;
}

/** One process: the gradients are already the batch's. */
export class NoGradientSync implements GradientSync {
  async finish(): Promise<void> {}
  dispose(): void {}
}
