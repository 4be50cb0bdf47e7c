/**
 * A cost model (arithmetic, not a measurement) of one data-parallel update: the bytes each GPU sends to all-reduce the
 * gradients, exactly or with PowerSGD (powersgd-layout.ts), the time that takes at a given link speed, and the compute
 * time of the update it is set against. bench/dp-cost-model.ts prints it for a config; README "Cost of a data-parallel
 * update" shows it for the paper's prior.
 *
 * - Ring all-reduce: each GPU sends (and receives) 2 (N - 1) / N times the payload; latency (2 (N - 1) messages of
 *   a ring) is not modelled, nor any overlap of the reduction with backward.
 * - PowerSGD: two all-reduces (P, then Q) of r (n + m) values per compressed matrix, and one of everything else.
 * - Compute: 6 x parameters x tokens (forward 2, backward 4 FLOPs per parameter and token; attention's own FLOPs
 *   left out) per GPU, at `peakFlops` x `mfu` (the fraction of peak a real step reaches: an assumption).
 */
import { powerSgdTraffic } from './powersgd-layout';

export interface DataParallelCostInput {
  /** Shapes of the model's parameters (one gradient each). */
  readonly parameterShapes: ReadonlyArray<readonly number[]>;
  /** Positions one example trains on (the prior: text_len + image_grid^2). */
  readonly tokensPerExample: number;
  /** Examples per update over all GPUs (train.batch_size). */
  readonly globalBatch: number;
  /** Bytes per gradient value on the wire (2: fp16, as the paper; 4: f32, as this engine's tensors). */
  readonly bytesPerValue: number;
  /** PowerSGD's rank r. */
  readonly rank: number;
  /** Per-GPU link speeds to price the traffic at, in Gb/s (10^9 bits per second). */
  readonly linkGbps: readonly number[];
  /** Dense peak of one GPU, FLOP/s, and the fraction of it a step reaches. */
  readonly peakFlops: number;
  readonly mfu: number;
}

export interface DataParallelCostRow {
  readonly gpus: number;
  readonly examplesPerGpu: number;
  /** Modelled compute time of one update (seconds). */
  readonly computeSeconds: number;
  /** Bytes one GPU sends per update: exact ring all-reduce, and with PowerSGD. */
  readonly exactBytes: number;
  readonly powerSgdBytes: number;
  /** Seconds to send them at each of linkGbps (same order). */
  readonly exactSeconds: readonly number[];
  readonly powerSgdSeconds: readonly number[];
}

export interface DataParallelCost {
  readonly parameters: number;
  /** Values a PowerSGD update all-reduces over values an exact one does. */
  readonly powerSgdFraction: number;
  readonly compressedMatrices: number;
  readonly rows: readonly DataParallelCostRow[];
}

/** Bytes one GPU sends in a ring all-reduce of `payloadBytes` over `gpus` GPUs. */
export function ringAllReduceBytes(payloadBytes: number, gpus: number): number {
  return gpus <= 1 ? 0 : (2 * (gpus - 1) / gpus) * payloadBytes;
}

export function dataParallelCost(input: DataParallelCostInput, gpuCounts: readonly number[]): DataParallelCost {
  checkInput(input, gpuCounts);
  const traffic = powerSgdTraffic(input.parameterShapes, input.rank);
  const parameters = traffic.uncompressedValues;
  const seconds = (bytes: number) => input.linkGbps.map((gbps) => (8 * bytes) / (gbps * 1e9));
  const rows = gpuCounts.map((gpus) => {
    const examplesPerGpu = input.globalBatch / gpus;
    const flops = 6 * parameters * input.tokensPerExample * examplesPerGpu;
    const exactBytes = ringAllReduceBytes(traffic.uncompressedValues * input.bytesPerValue, gpus);
    const powerSgdBytes = ringAllReduceBytes(traffic.compressedValues * input.bytesPerValue, gpus);
    return {
      gpus,
      examplesPerGpu,
      computeSeconds: flops / (input.peakFlops * input.mfu),
      exactBytes,
      powerSgdBytes,
      exactSeconds: seconds(exactBytes),
      powerSgdSeconds: seconds(powerSgdBytes),
    };
  });
  return {
    parameters,
    powerSgdFraction: traffic.compressedValues / traffic.uncompressedValues,
    compressedMatrices: traffic.compressedMatrices,
    rows,
  };
}

function checkInput(input: DataParallelCostInput, gpuCounts: readonly number[]): void {
  const positive = (name: string, v: number) => {
    if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`dalle: cost model: ${name} must be a positive number, got ${v}`);
  };
  positive('tokensPerExample', input.tokensPerExample);
  positive('globalBatch', input.globalBatch);
  positive('bytesPerValue', input.bytesPerValue);
  positive('peakFlops', input.peakFlops);
  positive('rank', input.rank);
  for (const g of input.linkGbps) positive('a link speed (Gb/s)', g);
  if (!(input.mfu > 0 && input.mfu <= 1)) throw new RangeError(`dalle: cost model: mfu must be in (0, 1], got ${input.mfu}`);
  for (const gpus of gpuCounts) {
    if (!Number.isInteger(gpus) || gpus < 1) throw new RangeError(`dalle: cost model: a GPU count must be an integer >= 1, got ${gpus}`);
    if (input.globalBatch % gpus !== 0) {
      throw new RangeError(`dalle: cost model: the global batch ${input.globalBatch} does not split evenly over ${gpus} GPUs`);
    }
  }
}
