// Sparse attention for the prior's masks (native/cpu/sparse_attention.cc), forward and fused backward: computes only
// the key tiles that hold allowed positions of a row, column or convolutional mask (src/core/models/prior/masks.ts),
// never the full (T, T) product.
// Keys: B = batch, H = heads, T = seqLen(spec) = textLen + gridSide^2, D = query/key width, Dv = value width.
//   q (B, H, T, D), k (B, H, T, D), v (B, H, T, Dv) -> (B, H, T, Dv)
//   out = softmax(scale * q k^T over the keys the mask allows) v, scale default 1 / sqrt(D).
// Same result as `attention(q, k, v, denseMask(spec))` (the reference below is exactly that, in float64); the
// forward saves the log-sum-exp per row (B, H, T) and the backward recomputes the probabilities.
// q, k, v may be views strided in (B, H, T) with a contiguous last dimension: they are read in place.
import { activeBackend, opKernel } from '../backend/registry';
import { MaskKind, MaskSpec, checkMaskSpec, isAllowed, seqLen } from '../models/prior/masks';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { refAttention } from './attention';

export interface SparseAttentionAttrs {
  spec: MaskSpec;
  /** Multiplies q k^T; default 1 / sqrt(D). */
  scale?: number;
}

/** The mask kind as the native kernels number it. */
export const MASK_KIND_CODE: Record<MaskKind, number> = { row: 0, column: 1, conv: 2 };

type SparseForward = (
  q: number, qs: number[], k: number, ks: number[], v: number, vs: number[], out: number, lse: number,
  kind: number, textLen: number, gridSide: number, convKernel: number, B: number, H: number, D: number, Dv: number,
  scale: number,
) => void;
type SparseBackward = (
  q: number, qs: number[], k: number, ks: number[], v: number, vs: number[], dO: number, dOs: number[], lse: number,
  dq: number | null, dk: number | null, dv: number | null, kind: number, textLen: number, gridSide: number,
  convKernel: number, B: number, H: number, D: number, Dv: number, scale: number,
) => void;

interface Dims {
  B: number;
  H: number;
  T: number;
  D: number;
  Dv: number;
}

function dims(inputs: readonly Tensor[], spec: MaskSpec): Dims {
  if (inputs.length !== 3) throw new Error(`dalle: sparseAttention takes q, k and v, got ${inputs.length} inputs`);
  checkMaskSpec(spec, 'sparseAttention');
  const [q, k, v] = inputs;
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.rank !== 4 || t.dtype !== 'f32') {
      throw new Error(`dalle: sparseAttention: ${name} must be f32 (B, H, T, D), got ${t.dtype} ${shapeStr(t.shape)}`);
    }
  }
  const [B, H, T, D] = q.shape;
  const Dv = v.shape[3];
  const same = (t: Tensor): boolean => t.shape[0] === B && t.shape[1] === H && t.shape[2] === T;
  if (!same(k) || !same(v) || k.shape[3] !== D) {
    throw new Error(
      `dalle: sparseAttention: shapes do not fit: q ${shapeStr(q.shape)} (B, H, T, D), k ${shapeStr(k.shape)} ` +
        `(B, H, T, D), v ${shapeStr(v.shape)} (B, H, T, Dv)`,
    );
  }
  const want = seqLen(spec);
  if (T !== want) {
    throw new Error(
      `dalle: sparseAttention: the sequence has ${T} positions but the ${spec.kind} mask is for ${want} ` +
        `(${spec.textLen} text + ${spec.gridSide}x${spec.gridSide} image); pass the full sequence, or use ` +
        '`attention` with a mask for a partial one (KV-cached generation)',
    );
  }
  if (D < 1 || Dv < 1) throw new Error(`dalle: sparseAttention: empty head width (q ${shapeStr(q.shape)}, v ${shapeStr(v.shape)})`);
  return { B, H, T, D, Dv };
}

/** The tensor itself and its (b, h, t) strides when its last dimension is contiguous, else a contiguous copy. */
function operand(t: Tensor): { t: Tensor; strides: number[]; owned: boolean } {
  const width = t.shape[3];
  const rowsOk = t.shape[2] <= 1 || t.strides[2] >= width;
  if ((t.strides[3] === 1 || width === 1) && rowsOk) {
    return { t, strides: [t.strides[0], t.strides[1], t.shape[2] <= 1 ? width : t.strides[2]], owned: false };
  }
  const c = t.copyContiguousRaw();
  return { t: c, strides: [t.shape[1] * t.shape[2] * width, t.shape[2] * width, width], owned: true };
}

function specArgs(spec: MaskSpec): [number, number, number, number] {
  return [MASK_KIND_CODE[spec.kind], spec.textLen, spec.gridSide, spec.convKernel];
}

/** The spec's mask as a float64 (T, T) reference tensor (1 = allowed). */
function refMask(spec: MaskSpec): RefTensor {
  const T = seqLen(spec);
  const m = refTensor([T, T]);
  for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) m.data[i * T + j] = isAllowed(spec, i, j) ? 1 : 0;
  return m;
}

export const sparseAttentionOp = defineOp<SparseAttentionAttrs>({
  name: 'sparseAttention',
  kernels: ['sparseAttentionForward', 'sparseAttentionBackward'],
  forward(inputs, attrs, ctx) {
    const { B, H, T, D, Dv } = dims(inputs, attrs.spec);
    const ops = inputs.map(operand);
    const out = Tensor.empty([B, H, T, Dv], 'f32');
    const lse = Tensor.empty([B, H, T], 'f32');
    try {
      opKernel<SparseForward>('sparseAttentionForward')(ops[0].t.address, ops[0].strides, ops[1].t.address,
        ops[1].strides, ops[2].t.address, ops[2].strides, out.address, lse.address, ...specArgs(attrs.spec), B, H, D, Dv,
        attrs.scale ?? 1 / Math.sqrt(D));
    } catch (err) {
      out.dispose();
      lse.dispose();
      throw err;
    } finally {
      for (const o of ops) if (o.owned) o.t.dispose();
    }
    ctx.save('lse', lse);
    return out;
  },
  backward(ctx, g) {
    const { inputs, attrs } = ctx;
    const { B, H, D, Dv } = dims(inputs, attrs.spec);
    const [q, k, v] = inputs;
    const dq = q.requiresGrad ? Tensor.empty(q.shape, 'f32') : null;
    const dk = k.requiresGrad ? Tensor.empty(k.shape, 'f32') : null;
    const dv = v.requiresGrad ? Tensor.empty(v.shape, 'f32') : null;
    const ops = [q, k, v, g].map(operand);
    try {
      opKernel<SparseBackward>('sparseAttentionBackward')(ops[0].t.address, ops[0].strides, ops[1].t.address,
        ops[1].strides, ops[2].t.address, ops[2].strides, ops[3].t.address, ops[3].strides, ctx.saved('lse').address,
        dq?.address ?? null, dk?.address ?? null, dv?.address ?? null, ...specArgs(attrs.spec), B, H, D, Dv,
        attrs.scale ?? 1 / Math.sqrt(D));
    } catch (err) {
      for (const t of [dq, dk, dv]) t?.dispose();
      throw err;
    } finally {
      for (const o of ops) if (o.owned) o.t.dispose();
    }
    return [dq, dk, dv];
  },
  reference(inputs, attrs) {
    // Dense attention under the mask, in float64.
    return refAttention([...inputs, refMask(attrs.spec)], { scale: attrs.scale });
  },
  cases(): OpCase<SparseAttentionAttrs>[] {
    const c = (
      name: string, [B, H, D, Dv]: number[], spec: MaskSpec, extra: Partial<OpCase<SparseAttentionAttrs>> = {},
      scale?: number,
    ): OpCase<SparseAttentionAttrs> => {
      const T = seqLen(spec);
      return {
        name: `${spec.kind}${spec.kind === 'conv' ? ` k${spec.convKernel}` : ''} text ${spec.textLen} + ` +
          `${spec.gridSide}x${spec.gridSide}, ${name}`,
        inputs: [{ shape: [B, H, T, D] }, { shape: [B, H, T, D] }, { shape: [B, H, T, Dv] }],
        attrs: scale === undefined ? { spec } : { spec, scale },
        ...extra,
      };
    };
    const s = (kind: MaskKind, textLen: number, gridSide: number, convKernel = 3): MaskSpec =>
      ({ kind, textLen, gridSide, convKernel });
    return [
      c('1x1 d1', [1, 1, 1, 1], s('row', 0, 1)),
      c('full gradcheck', [1, 1, 2, 3], s('row', 2, 2), { gradcheck: 'full' }),
      c('full gradcheck', [1, 1, 3, 2], s('column', 1, 3), { gradcheck: 'full' }),
      c('full gradcheck', [1, 1, 2, 2], s('conv', 2, 3, 3), { gradcheck: 'full' }),
      c('2x3 d5 dv3', [2, 3, 5, 3], s('row', 7, 3)),
      c('2x2 d4', [2, 2, 4, 4], s('column', 5, 5)),
      c('1x2 d3 dv5', [1, 2, 3, 5], s('conv', 3, 5, 1)),
      c('2x1 d4', [2, 1, 4, 4], s('conv', 4, 5, 3)),
      c('1x2 d4', [1, 2, 4, 4], s('conv', 6, 5, 5)),
      c('no text', [1, 2, 4, 3], s('column', 0, 3)),
      c('no text', [1, 1, 4, 4], s('conv', 0, 5, 5)),
      c('k wider than the grid', [1, 1, 4, 4], s('conv', 1, 3, 9)),
      c('scale 0.3', [1, 2, 6, 4], s('row', 2, 5), {}, 0.3),
      // Several text blocks (64), row blocks (32 positions), conv blocks (16 columns), key groups (64) and column
      // blocks (32 rows: a 33 x 33 grid).
      c('several blocks d8', [1, 2, 8, 8], s('row', 70, 9)),
      c('several blocks d8', [1, 1, 8, 8], s('conv', 65, 20, 5)),
      c('several blocks d4', [1, 1, 4, 4], s('column', 3, 33)),
      // configs/prior-emoji.yaml's shapes (32 text + 16x16, heads of 32, conv k5), then odd ones: blocks of 7 and 23
      // queries (partial 16-lane tiles), D = 17 (a partial 16 x 16 transpose), Dv = 70 (more than 64 output columns).
      c('prior-emoji d32', [1, 2, 32, 32], s('row', 32, 16)),
      c('prior-emoji d32', [1, 2, 32, 32], s('column', 32, 16)),
      c('prior-emoji d32', [1, 2, 32, 32], s('conv', 32, 16, 5)),
      c('odd d17 dv70', [1, 2, 17, 70], s('conv', 23, 7, 5)),
      c('odd d33 dv17', [2, 1, 33, 17], s('row', 9, 7)),
    ];
  },
});

/**
 * Sparse attention under a prior mask: q (B, H, T, D), k (B, H, T, D), v (B, H, T, Dv) -> (B, H, T, Dv), with
 * T = seqLen(spec). Equals dense `attention(q, k, v, denseMask(spec))` but computes only the allowed tiles.
 */
export function sparseAttention(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec, opts: { scale?: number } = {}): Tensor {
  return applyOp(sparseAttentionOp, [q, k, v], opts.scale === undefined ? { spec } : { spec, scale: opts.scale });
}
