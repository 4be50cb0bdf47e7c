// The prior's size without building it (no engine needed): what `dalle config` prints before a long job.
// Key: L = text_len, N = image_grid^2, T = L + N positions in a training forward, C = d_model, H = n_heads,
// D = head_dim, B = batch rows. Memory is counted as the engine's caching allocator counts it (native/src/allocator.cc):
// every tensor takes its size class, so the estimates are comparable with native.allocStats().peakBytesInUse.
import type { PriorConfig } from '../../config/schemas/prior';

type Arch = PriorConfig['model'];

/** The precisions a prior trains in (runtime.precision; src/core/train/precision). */
export type PriorPrecision = 'fp32' | 'fp16' | 'bf16';

/** The shapes of the prior's parameter tensors (prior.ts builds exactly these): Linear weights (out, in), embedding
 *  tables (count, C), gains and biases (C). */
export function parameterShapes(m: Arch): number[][] {
  const C = m.n_heads * m.head_dim;
  const L = m.text_len;
  const G = m.image_grid;
  const Vt = m.text_vocab + L; // the text vocabulary plus one padding token per position
  const out = [[Vt, C], [L, C], [m.image_vocab, C], [G, C], [G, C]]; // embeddings: text, text positions, image, rows, columns
  for (let i = 0; i < m.n_layers; i++) {
    out.push([C], [C], [C], [C]); // ln_1, ln_2 (gain, bias)
    for (let j = 0; j < 4; j++) out.push([C, C], [C]); // q, k, v, proj
    out.push([4 * C, C], [4 * C], [C, 4 * C], [C]); // mlp fc (C -> 4C), proj (4C -> C)
  }
  out.push([C], [C], [Vt, C], [Vt], [m.image_vocab, C], [m.image_vocab]); // ln_f; text_head; image_head
  return out;
}

/** The sizes of the prior's parameter tensors, in elements. */
export function parameterSizes(m: Arch): number[] {
  return parameterShapes(m).map((shape) => shape.reduce((a, b) => a * b, 1));
}

/** Parameters of a prior with this architecture (prior.ts builds exactly these; a test checks the two agree). */
export function priorParameterCount(m: Arch): number {
  return parameterSizes(m).reduce((a, b) => a + b, 0);
}

/** The bytes a request of `bytes` really takes (native/src/allocator.cc size_class: 64-byte steps up to 4 KiB, 8
 *  classes per power of two below 1 MiB, whole 2 MiB huge pages from 1 MiB on). */
export function allocatorBytes(bytes: number): number {
  const b = Math.max(1, bytes);
  if (b <= 4096) return Math.ceil(b / 64) * 64;
  const MIB = 1 << 20;
  if (b >= MIB) return Math.ceil(b / (2 * MIB)) * 2 * MIB;
  const step = 2 ** Math.floor(Math.log2(b)) / 8;
  return Math.min(Math.ceil(b / step) * step, MIB);
}

/** The bytes a request takes in an allocator (its size class): allocatorBytes for the CPU's, deviceAllocatorBytes
 *  (size-cuda.ts) for a GPU's. The counting below is the same on both: the engine's tensors are f32 on either. */
export type SizeClassOf = (bytes: number) => number;

/** n fp32 tensors of `elements` values each, as an allocator with these size classes counts them. */
const f32Of = (sizeClass: SizeClassOf) => (n: number, elements: number): number => n * sizeClass(4 * elements);

export interface PriorMemoryEstimate {
  /** fp32 weights, their gradients and AdamW's two moments (4 tensors per parameter), and the attention masks. */
  readonly stateBytes: number;
  /** What a training step holds on top at its peak: activations kept for backward, the backward's gradients. */
  readonly activationBytes: number;
  readonly totalBytes: number;
}

export interface PriorTrainingMemoryOptions {
  /** runtime.precision (default fp32). */
  readonly precision?: PriorPrecision;
  /** train.recompute: keep only each block's input and recompute its activations in backward (default false). */
  readonly recompute?: boolean;
  /** The allocator's size classes (default the CPU allocator's, allocatorBytes). */
  readonly sizeClass?: SizeClassOf;
}

/**
 * Peak memory of a training step (forward, backward, AdamW update), estimated by counting what our autograd keeps
 * alive at the end of backward. The per-block counts were calibrated against the allocator's measured peak
 * (test/models/prior-size.test.ts checks them, within 20%, on two architectures and several batch sizes):
 * - per block, about 18 (B, T, C) and 3.25 (B, T, 4C) fp32 tensors (layer norms, q/k/v and bias adds, head
 *   relayouts, attention output, MLP, residual sums, and the gradients of these alive during backward; fitted by
 *   least squares on measured peaks, so a count can be fractional);
 * - the image logits (B, N, Vi) and text logits (B, L-1, Vt+L): matmul output, bias add, softmax, gradient and its
 *   copies (5.5 each, fitted);
 * - fp16/bf16 (emulated on this engine: every tensor stays fp32, with values rounded to 16 bits): per block the
 *   rounded copies of each resblock Linear's input and output (about 10 more (B, T, C) and 2 (B, T, 4C)) and the
 *   rounded weight copies (12 C^2); the bf16 Adam moments are fp32 tensors rounded in place, so they save nothing;
 * - recompute: the block inputs (B, T, C) per layer plus one and a half blocks' activations (one block recomputed
 *   and the gradients flowing through it), and half a block's 16-bit copies in fp16 / bf16.
 */
export function priorTrainingMemory(m: Arch, batchSize: number, options: PriorTrainingMemoryOptions = {}): PriorMemoryEstimate {
  const f32 = f32Of(options.sizeClass ?? allocatorBytes);
  const B = batchSize;
  const C = m.n_heads * m.head_dim;
  const L = m.text_len;
  const N = m.image_grid * m.image_grid;
  const T = L + N;
  // Weights, gradients, Adam's m and v; the dense i32 (T, T) masks of the attention kinds (row, column, conv).
  const stateBytes = 4 * parameterSizes(m).reduce((a, n) => a + f32(1, n), 0) + f32(3, T * T);
  const blockBytes = f32(18, B * T * C) + f32(3.25, B * T * 4 * C);
  const half = options.precision === 'fp16' || options.precision === 'bf16';
  const halfBlockBytes = half ? f32(10, B * T * C) + f32(2, B * T * 4 * C) + f32(8, C * C) + f32(2, 4 * C * C) : 0;
  // Recompute: one and a half blocks' activations, but only half a block's 16-bit copies (fitted on fp16 / bf16 runs:
  // counting 1.5 of them too overestimated by up to 21%).
  const trunkBytes = options.recompute
    ? f32(m.n_layers, B * T * C) + 1.5 * blockBytes + 0.5 * halfBlockBytes
    : m.n_layers * (blockBytes + halfBlockBytes);
  const logitsBytes = f32(5.5, B * N * m.image_vocab) + (L > 1 ? f32(5.5, B * (L - 1) * (m.text_vocab + L)) : 0);
  const activationBytes = trunkBytes + logitsBytes;
  return { stateBytes, activationBytes, totalBytes: stateBytes + activationBytes };
}

export interface PriorGenerationMemoryEstimate {
  /** Rows the prior runs at once: the batch, doubled when cond-scale != 1 (a conditioned and an unconditioned row). */
  readonly rows: number;
  /** fp32 weights (no gradients, no optimizer). */
  readonly weightBytes: number;
  /** The KV cache: K and V (rows, H, L + N, D) fp32 per layer, and its fused q/k/v weights (3C, C) and biases. */
  readonly cacheBytes: number;
  /** The larger of the prefill's temporaries (one block's at a time, plus every block's output) and a step's. */
  readonly transientBytes: number;
  readonly totalBytes: number;
}

/**
 * Peak memory of `dalle generate --batch B` (the prior part: createCache, prefill, one step per image token), in fp32
 * (generation has no 16-bit path on this engine). A prefill holds about 16 (rows, L, C) and 3 (rows, L, 4C) tensors of
 * the block it runs (each block's are freed when it ends) and the output of every block; a step the same with one
 * position, plus the logits (rows, Vi). The cached attention reads K and V in place (no copies). Calibrated like
 * priorTrainingMemory; the test checks it.
 */
export function priorGenerationMemory(
  m: Arch, batch: number, options: { condScale?: number; sizeClass?: SizeClassOf } = {},
): PriorGenerationMemoryEstimate {
  const f32 = f32Of(options.sizeClass ?? allocatorBytes);
  const rows = options.condScale !== undefined && options.condScale !== 1 ? 2 * batch : batch;
  const C = m.n_heads * m.head_dim;
  const L = m.text_len;
  const S = L + m.image_grid * m.image_grid;
  const weightBytes = parameterSizes(m).reduce((a, n) => a + f32(1, n), 0);
  const cacheElements = rows * m.n_heads * S * m.head_dim; // one K or V buffer
  // K and V, plus each layer's fused q/k/v projection (prior.ts createCache: a (3C, C) weight and a (3C) bias).
  const cacheBytes = f32(2 * m.n_layers, cacheElements) + m.n_layers * (f32(1, 3 * C * C) + f32(1, 3 * C));
  // A cached forward frees each block's temporaries when the block ends (prior.ts trunk): one block's at a time,
  // plus every block's output (rows, T, C) until the forward returns.
  const block = (T: number) => f32(16, rows * T * C) + f32(3, rows * T * 4 * C) + f32(1, rows * m.n_heads * T * T);
  const prefill = f32(m.n_layers, rows * L * C) + block(L);
  const step = f32(m.n_layers, rows * C) + f32(16, rows * C) + f32(3, rows * 4 * C) + f32(4, rows * m.image_vocab);
  const transientBytes = Math.max(prefill, step);
  return { rows, weightBytes, cacheBytes, transientBytes, totalBytes: weightBytes + cacheBytes + transientBytes };
}
