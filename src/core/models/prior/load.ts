/**
 * A trained prior from its run directory, as `dalle generate --prior RUN`, `dalle evaluate nll` and `dalle export`
 * take it:
 *
 *   RUN/config.yaml          the architecture (model.*) and the text settings
 *   RUN/tokenizer.json       the caption tokenizer the prior was trained with (Hugging Face format, src/core/text)
 *   RUN/latest, RUN/checkpoints/step-N/model.safetensors   the weights (src/core/checkpoint)
 *
 * `target` may be the run directory (its latest checkpoint) or one checkpoint directory (RUN/checkpoints/step-N).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../checkpoint';
import { loadWeightsOnto, resolveTrainedRun, TrainedRunKind } from '../../checkpoint/trained-run';
import { PriorConfig, priorConfig } from '../../config';
import { TextTokenizer } from '../../text';
import { Philox } from '../../tensor/rng';
import type { Device } from '../../tensor';
import { Prior } from './prior';

/** The run's caption tokenizer: RUN/tokenizer.json. */
export const PRIOR_TOKENIZER_FILE = 'tokenizer.json';

const PRIOR_RUN: TrainedRunKind = {
  kind: 'prior',
  label: 'prior',
  wrongKindHint: 'pass --prior a run made by `dalle train-prior` (and --dvae the dVAE run)',
};

export interface TrainedPrior {
  readonly model: Prior;
  readonly tokenizer: TextTokenizer;
  readonly config: PriorConfig;
  readonly checkpoint: string;
  readonly step: number;
}

/**
 * Loads the prior of a run or checkpoint directory onto `device`: the checkpoint is read on the host (the same files
 * on every device) and the model moved there once. Dispose `model` when done.
 */
export function loadPrior(target: string, device: Device = 'cpu'): TrainedPrior {
  const { found, config } = resolveTrainedRun(target, PRIOR_RUN, priorConfig);
  const tokenizerFile = path.join(found.runDir, PRIOR_TOKENIZER_FILE);
  if (!fs.existsSync(tokenizerFile)) {
    throw new CheckpointError(`the prior run ${found.runDir} has no ${PRIOR_TOKENIZER_FILE}`, `copy the tokenizer the prior was trained with to ${tokenizerFile}`);
  }
  const tokenizer = TextTokenizer.load(tokenizerFile);
  if (tokenizer.vocabSize > config.model.text_vocab) {
    throw new CheckpointError(
      `${tokenizerFile} has ${tokenizer.vocabSize} tokens but the prior reads ${config.model.text_vocab} (model.text_vocab)`,
      'the tokenizer is not the one this prior was trained with: put the run\'s own tokenizer.json back',
    );
  }
  const model = loadWeightsOnto(new Prior(config.model, new Philox(config.runtime.seed)), found.dir, device);
  return { model, tokenizer, config, checkpoint: found.dir, step: found.state.step };
}
