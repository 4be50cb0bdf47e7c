// The dVAE training step the dVAE benchmarks time (bench/dvae-step.ts, bench/ops.ts, bench/step-profile.ts): the model
// at seed 0, AdamW, a fixed uniform random batch (B, 3, res, res), and one step = forward, loss at tau 0.5 and beta 1,
// backward, update.
import { DvaeConfig } from '../src/core/config';
import { Dvae, dvaeLoss } from '../src/core/models/dvae';
import { Philox, Tensor, backward, keep, randUniform, tidy, zeroGrad } from '../src/core/tensor';
import { AdamW } from '../src/core/train/adamw';

export interface DvaeStepBench {
  readonly model: Dvae;
  readonly optimizer: AdamW;
  /** The input batch (B, 3, res, res). */
  readonly x: Tensor;
  step(): void;
  dispose(): void;
}

export function dvaeStepBench(config: DvaeConfig): DvaeStepBench {
  const model = new Dvae(config, { seed: 0 });
  const params = model.namedParameters().map(([name, tensor]) => ({ name, tensor }));
  const optimizer = new AdamW([{ params }], { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-4 });
  const rng = new Philox(1);
  const res = config.data.resolution;
  const x = keep(randUniform(rng, [config.train.batch_size, 3, res, res]));
  return {
    model,
    optimizer,
    x,
    step: () =>
      tidy(() => {
        zeroGrad(optimizer.parameters);
        backward(dvaeLoss(model, x, { tau: 0.5, beta: 1, rng }).loss);
        optimizer.update();
      }),
    dispose: () => {
      optimizer.dispose();
      model.dispose();
      x.dispose();
    },
  };
}
