/**
 * Opening a trained model from its run: the checkpoint a run or checkpoint directory names, its run's config.yaml,
 * and the weights read into a freshly built model. What the model loaders (src/core/models/{dvae,prior}/load.ts)
 * share; each adds its own files (the prior's tokenizer) and shapes.
 */
import * as path from 'node:path';
import { ConfigOf, ConfigSchema, readRunConfig } from '../config';
import type { Device, Tensor } from '../tensor';
import { CheckpointError, RunKind } from './format';
import { loadCheckpointModel, resolveCheckpoint, ResolvedCheckpoint } from './read';

/** How a loader names its model in errors: "... is a prior checkpoint, not a dVAE" and what to pass instead. */
export interface TrainedRunKind {
  readonly kind: RunKind;
  readonly label: string;
  readonly wrongKindHint: string;
}

/**
 * The checkpoint of `target` (a run directory: its latest; or a checkpoint directory), checked to be of `expected.kind`,
 * and its run's config read with `schema`. Throws CheckpointError naming the file when either is missing or wrong.
 */
export function resolveTrainedRun<C extends ConfigSchema>(
  target: string,
  expected: TrainedRunKind,
  schema: C,
): { found: ResolvedCheckpoint; config: ConfigOf<C> } {
  const found = resolveCheckpoint(target, expected.kind);
  if (found.state.kind !== expected.kind) {
    throw new CheckpointError(`${found.dir} is a ${found.state.kind} checkpoint, not a ${expected.label}`, expected.wrongKindHint);
  }
  try {
    return { found, config: readRunConfig(found.runDir, schema) };
  } catch (error) {
    throw new CheckpointError(
      `cannot read the run config of ${found.dir} (${path.join(found.runDir, 'config.yaml')}): ${error instanceof Error ? error.message : String(error)}`,
      'a checkpoint needs the config.yaml of its run directory (RUN/config.yaml, two levels above checkpoints/step-N)',
    );
  }
}

/** What loadWeightsOnto needs of a model (nn/module.ts's Module). */
export interface WeightedModel {
  namedParameters(): Array<[string, Tensor]>;
  to(device: Device): unknown;
  dispose(): void;
}

/**
 * Reads the checkpoint's weights into `model` on the host (the same files on every device), then moves it to `device`
 * once. On failure the model is disposed and the error passed on.
 */
export function loadWeightsOnto<M extends WeightedModel>(model: M, checkpointDir: string, device: Device): M {
  try {
    loadCheckpointModel(checkpointDir, new Map(model.namedParameters()));
    model.to(device);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}
