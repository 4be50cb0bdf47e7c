// The prior's size without building it (no engine needed): what `dalle config` prints before a long job.
// Key: L = text_len, N = image_grid^2, T = L + N positions in a training forward, C = d_model, B = batch_size.
import type { PriorConfig } from '../../config/schemas/prior';

type Arch = PriorConfig['model'];

/** Parameters of a prior with this architecture (prior.ts builds exactly these; a test checks the two agree). */
export function priorParameterCount(m: Arch): number {
  const C = m.n_heads * m.head_dim;
  const L = m.text_len;
  const G = m.image_grid;
  const embeddings = (m.text_vocab + L) * C + L * C + m.image_vocab * C + 2 * G * C;
  // ln_1, ln_2 (gain + bias); q, k, v, proj (C x C + bias); mlp fc (C -> 4C), proj (4C -> C).
  const block = 2 * 2 * C + 4 * (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C);
  // ln_f; text_head (C -> Vt + L); image_head (C -> Vi).
  const heads = 2 * C + (C * (m.text_vocab + L) + m.text_vocab + L) + (C * m.image_vocab + m.image_vocab);
  return embeddings + m.n_layers * block + heads;
}

export interface PriorMemoryEstimate {
  /** fp32 weights, gradients and AdamW's two moments: 16 bytes per parameter. */
  readonly stateBytes: number;
  /** Activations a training step keeps for the backward pass (fp32). */
  readonly activationBytes: number;
  readonly totalBytes: number;
}

/**
 * Memory of one fp32 training step, estimated by counting what our autograd keeps alive: per block about 28 (B, T, C)
 * tensors (layer norms, q/k/v and their bias adds, attention output and its relayout, the MLP's three (B, T, 4C)
 * tensors, residual sums), the logits (B, N, Vi) with their bias add and gradient, and one dense (T, T) i32 mask per
 * attention kind. An estimate: the allocator's size classes and transient backward buffers add to it.
 */
export function priorTrainingMemory(m: Arch, batchSize: number): PriorMemoryEstimate {
  const C = m.n_heads * m.head_dim;
  const N = m.image_grid * m.image_grid;
  const T = m.text_len + N;
  const stateBytes = 16 * priorParameterCount(m);
  const activationBytes = 4 * (28 * m.n_layers * batchSize * T * C + 3 * batchSize * N * m.image_vocab + 3 * T * T);
  return { stateBytes, activationBytes, totalBytes: stateBytes + activationBytes };
}
