/**
 * A trained dVAE from its run: RUN/config.yaml gives the architecture and resolution, the checkpoint the weights
 * (src/core/checkpoint). What encode, decode, generate, evaluate, export and the prior's training open.
 */
import * as path from 'node:path';
import { CheckpointError, loadCheckpointModel, resolveCheckpoint } from '../../checkpoint';
import { DvaeConfig, dvaeConfig, readRunConfig } from '../../config';
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

/**
 * A dVAE from a run directory (its latest checkpoint) or a checkpoint directory, on `device`: the checkpoint is read
 * on the host (the same files on every device) and the model moved there once. Dispose `model` when done.
 */
export function loadDvae(target: string, device: Device = 'cpu'): TrainedDvae {
  const found = resolveCheckpoint(target, 'dvae');
  if (found.state.kind !== 'dvae') throw new CheckpointError(`${found.dir} is a ${found.state.kind} checkpoint, not a dVAE`, 'pass a run made by `dalle train-dvae`');
  let config: DvaeConfig;
  try {
    config = readRunConfig(found.runDir, dvaeConfig);
  } catch (error) {
    throw new CheckpointError(
      `cannot read the run config of ${found.dir} (${path.join(found.runDir, 'config.yaml')}): ${error instanceof Error ? error.message : String(error)}`,
      'a checkpoint needs the config.yaml of its run directory (RUN/config.yaml, two levels above checkpoints/step-N)',
    );
  }
  const model = new Dvae(config, { seed: config.runtime.seed });
  try {
    loadCheckpointModel(found.dir, new Map(model.namedParameters()));
    model.to(device);
  } catch (error) {
    model.dispose();
    throw error;
  }
  const resolution = config.data.resolution;
  return { model, config, checkpoint: found.dir, step: found.state.step, resolution, gridSide: resolution / model.downsampleFactor };
}
