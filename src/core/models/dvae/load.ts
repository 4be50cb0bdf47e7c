/**
 * A trained dVAE from its run: RUN/config.yaml gives the architecture and resolution, the checkpoint the weights
 * (src/core/checkpoint). What encode, decode, generate, evaluate, export and the prior's training open.
 */
import { loadWeightsOnto, resolveTrainedRun, TrainedRunKind } from '../../checkpoint/trained-run';
import { DvaeConfig, dvaeConfig } from '../../config';
import type { Device } from '../../tensor';
import { Dvae } from './dvae';

export interface TrainedDvae {
  readonly model: Dvae;
  readonly config: DvaeConfig;
  /** The checkpoint directory the weights came from, and its update count. */
  readonly checkpoint: string;
  readonly step: number;
  /** Image side R and token grid side R / f. */
  readonly resolution: number;
  readonly gridSide: number;
}

const DVAE_RUN: TrainedRunKind = { kind: 'dvae', label: 'dVAE', wrongKindHint: 'pass a run made by `dalle train-dvae`' };

/**
 * A dVAE from a run directory (its latest checkpoint) or a checkpoint directory, on `device`: the checkpoint is read
 * on the host (the same files on every device) and the model moved there once. Dispose `model` when done.
 */
export function loadDvae(target: string, device: Device = 'cpu'): TrainedDvae {
  const { found, config } = resolveTrainedRun(target, DVAE_RUN, dvaeConfig);
  const model = loadWeightsOnto(new Dvae(config, { seed: config.runtime.seed }), found.dir, device);
  const resolution = config.data.resolution;
  return { model, config, checkpoint: found.dir, step: found.state.step, resolution, gridSide: resolution / model.downsampleFactor };
}
