// The prior training step both prior benchmarks time (bench/prior-step.ts on the CPU, bench/cuda-prior-step.ts on a
// device): the model at Philox(0), AdamW with the paper's settings (no decay on gains, biases and embeddings), fixed
// random text (B, text_len) and image (B, image_grid^2) tokens, and one step = forward, backward, clipping at 4, update.
import { Device } from '../src/core/backend';
import { PriorConfig } from '../src/core/config';
import { Prior, priorDecays } from '../src/core/models/prior';
import { Philox, Tensor, backward, keep, readScalars, tidy, zeroGrad } from '../src/core/tensor';
import { AdamW } from '../src/core/train/adamw';
import { clipGradNorm } from '../src/core/train/clip';

export interface PriorStepBench {
  readonly model: Prior;
  readonly optimizer: AdamW;
  /** One training step; with `readLoss`, the loss read back (which waits for a device's work), else NaN. */
  step(readLoss?: boolean): number;
  dispose(): void;
}

export function priorStepBench(m: PriorConfig['model'], B: number, device?: Device): PriorStepBench {
  const model = device === undefined ? new Prior(m, new Philox(0)) : new Prior(m, new Philox(0)).to(device);
  const named = model.namedParameters().map(([name, tensor]) => ({ name, tensor }));
  const optimizer = new AdamW(
    [{ params: named.filter((p) => priorDecays(p.name)) }, { params: named.filter((p) => !priorDecays(p.name)), weightDecay: 0 }],
    { lr: 1e-4, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 4.5e-2 },
  );
  const rng = new Philox(1);
  const N = m.image_grid * m.image_grid;
  const text = keep(Tensor.from(rng.randint(B * m.text_len, m.text_vocab), [B, m.text_len], 'i32', model.device));
  const image = keep(Tensor.from(rng.randint(B * N, m.image_vocab), [B, N], 'i32', model.device));
  return {
    model,
    optimizer,
    step: (readLoss = false) => tidy(() => {
      zeroGrad(optimizer.parameters);
      const r = model.loss(text, image);
      backward(r.loss);
      clipGradNorm(optimizer.parameters, 4);
      optimizer.update(1e-4);
      return readLoss ? readScalars([r.loss])[0] : NaN;
    }),
    dispose: () => {
      text.dispose();
      image.dispose();
      optimizer.dispose();
      model.dispose();
    },
  };
}
