/**
 * A prior run directory (config.yaml, tokenizer.json, checkpoints/step-0) with seeded random weights, for the commands
 * that read one (generate, rerank, export, evaluate) on the tiny dVAE's grids: what tests use instead of training.
 */
import * as path from 'node:path';
import { writeCheckpoint } from '../../src/core/checkpoint';
import { parseSetArgument, priorConfig, resolveConfig, writeRunConfig } from '../../src/core/config';
import { Prior } from '../../src/core/models/prior';
import { Philox } from '../../src/core/tensor';
import { TextTokenizer } from '../../src/core/text';

export interface RandomPriorRun {
  /** Captions the tokenizer is trained on (lower-cased BPE of `vocabSize` tokens). */
  readonly captions: readonly string[];
  readonly vocabSize: number;
  readonly layers: number;
  /** The dVAE grid side the prior is for (default 8: the tiny dVAE's 8x8 grids of 16 codes). */
  readonly grid?: number;
  /** Extra --set arguments of the run's config (e.g. 'runtime.seed=3'). */
  readonly sets?: readonly string[];
  /** Philox seed of the weights (default 11). */
  readonly weightSeed?: number;
  /** Changes the weights before they are written (e.g. larger ones, so sampling is not near uniform). */
  readonly adjust?: (model: Prior) => void;
}

export async function writeRandomPriorRun(dir: string, run: RandomPriorRun): Promise<string> {
  const tokenizer = await TextTokenizer.train(run.captions, { vocabSize: run.vocabSize, lowercase: true });
  const config = resolveConfig(priorConfig, {
    sets: [
      `model.n_layers=${run.layers}`, 'model.n_heads=2', 'model.head_dim=8', 'model.text_len=6', 'model.text_vocab=300',
      `model.image_grid=${run.grid ?? 8}`, 'model.image_vocab=16', 'model.conv_kernel=3', ...(run.sets ?? []),
    ].map((text) => parseSetArgument(text)),
  });
  writeRunConfig(dir, priorConfig, config);
  tokenizer.save(path.join(dir, 'tokenizer.json'));
  const model = new Prior(config.model, new Philox(run.weightSeed ?? 11));
  try {
    run.adjust?.(model);
    writeCheckpoint(dir, { model: model.namedParameters(), optimizer: [], state: { kind: 'prior', step: 0, optimizer_step: 0, rng: {}, metrics: {} } });
  } finally {
    model.dispose();
  }
  return dir;
}
