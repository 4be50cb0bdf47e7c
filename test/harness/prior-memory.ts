// What the prior's memory-estimate tests measure (test/models/prior-size.test.ts on the CPU allocator,
// prior-size-cuda.test.ts on the CUDA backend over a stand-in addon): two small architectures with odd sizes, and the
// peak bytes of a few real training steps.
// Key: B = batch, L = text_len, G = grid side, N = G^2, Vt / Vi = text / image vocab.
import type { Device } from '../../src/core/backend/device';
import { Prior, PriorArch } from '../../src/core/models/prior';
import type { PriorPrecision } from '../../src/core/models/prior/size';
import { Philox, Tensor, backward, tidy, zeroGrad } from '../../src/core/tensor';
import { AdamW } from '../../src/core/train/adamw';
import { createPrecision, priorResblocks } from '../../src/core/train/precision';

/** Odd sizes: 3 layers, 3 heads of 20 (C 60), L 7, G 5, Vt 300, Vi 77. */
export const ODD: PriorArch = { n_layers: 3, n_heads: 3, head_dim: 20, text_len: 7, text_vocab: 300, image_grid: 5, image_vocab: 77, conv_kernel: 3 };
/** Wider and shallower, a large text vocabulary: 2 layers, 4 heads of 32 (C 128), L 12, G 6, Vt 2000, Vi 256. */
export const WIDE: PriorArch = { n_layers: 2, n_heads: 4, head_dim: 32, text_len: 12, text_vocab: 2000, image_grid: 6, image_vocab: 256, conv_kernel: 5 };

export const MIB = 2 ** 20;

/** The allocator whose peak is measured (the main addon's, or a backend's). */
export interface MeasuredAllocator {
  allocStats(): { bytesInUse: number; peakBytesInUse: number };
  resetPeak(): void;
}

/**
 * Peak bytes of `allocator` above what was in use before: the model (built on the host, moved to `device`), its
 * optimizer, and 2 training steps (forward, backward, AdamW update) at batch B.
 */
export function measurePriorTraining(allocator: MeasuredAllocator, device: Device, arch: PriorArch, B: number,
  precision: PriorPrecision, recompute: boolean): number {
  const before = allocator.allocStats().bytesInUse;
  allocator.resetPeak();
  const model = new Prior(arch, new Philox(0)).to(device);
  model.recompute = recompute;
  const p = createPrecision(precision, { workers: 1 });
  p.attach(priorResblocks(model));
  model.residual = p;
  const named = model.namedParameters();
  const opt = new AdamW([{ params: named.map(([name, tensor]) => ({ name, tensor })) }], { lr: 1e-4, beta1: 0.9, beta2: 0.96, eps: 1e-8, weightDecay: 0.045 });
  p.attachOptimizer(named, opt.stateTensors());
  const rng = new Philox(1);
  const L = arch.text_len, N = arch.image_grid ** 2;
  const text = rng.randint(B * L, arch.text_vocab), image = rng.randint(B * N, arch.image_vocab);
  for (let s = 0; s < 2; s++) {
    tidy(() => {
      zeroGrad(model.parameters());
      const r = model.loss(Tensor.from(text, [B, L], 'i32', device), Tensor.from(image, [B, N], 'i32', device));
      backward(r.loss);
      p.unscaleGradients();
      opt.update(1e-4);
      p.endStep();
      return r.loss.item();
    });
  }
  const peak = allocator.allocStats().peakBytesInUse - before;
  for (const t of opt.stateTensors().values()) t.dispose();
  model.dispose();
  return peak;
}
