// Dense scaled dot-product attention with an arbitrary mask (native/cpu/attention.cc), forward and fused backward.
// Keys: B = batch, H = heads, Tq = queries, Tk = keys, D = query/key width, Dv = value width.
//   q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv), mask (Tq, Tk) i32 optional -> (B, H, Tq, Dv)
//   out = softmax(scale * q k^T over the allowed keys) v, scale default 1 / sqrt(D).
// Allowed: mask[i, j] != 0 (1 = may attend; one mask shared by every batch entry and head), and with causal: true,
// j <= i + (Tk - Tq): the queries are the last Tq of the Tk positions (KV-cached generation); for Tq == Tk that is the
// lower triangle, the same as an explicit tril mask. mask and causal combine (both must allow).
// A query row with no allowed key outputs zeros (and passes no gradient), rather than NaN.
// The forward saves the log-sum-exp of each row (B, H, Tq), not the probabilities: P is quadratic in the sequence
// length and the backward recomputes it with one extra GEMM (attention.cc explains the trade).
// This is the reference-quality dense kernel the prior's sparse kernels are tested against.
// q, k, v may be views strided in (B, H, T) with a contiguous last dimension (e.g. permuted (B, T, H, D)
// projections): they are read in place, not copied.
import { activeBackend, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { DType } from '../tensor/dtype';
import { contiguous } from './view';

export interface AttentionAttrs {
  /** Multiplies q k^T; default 1 / sqrt(D). */
  scale?: number;
  /** Query i (of the last Tq positions) attends to keys j <= i + Tk - Tq only. */
  causal?: boolean;
}

type AttentionForward = (
  q: number, qs: number[], k: number, ks: number[], v: number, vs: number[], mask: number | null, out: number,
  lse: number, B: number, H: number, Tq: number, Tk: number, D: number, Dv: number, scale: number, causal: boolean,
) => void;
type AttentionBackward = (
  q: number, qs: number[], k: number, ks: number[], v: number, vs: number[], mask: number | null, dO: number,
  dOs: number[], lse: number, dq: number | null, dk: number | null, dv: number | null, B: number, H: number,
  Tq: number, Tk: number, D: number, Dv: number, scale: number, causal: boolean,
) => void;

interface Dims {
  B: number;
  H: number;
  Tq: number;
  Tk: number;
  D: number;
  Dv: number;
}

function dims(inputs: readonly Tensor[]): Dims {
  const [q, k, v, mask] = inputs;
  if (inputs.length < 3 || inputs.length > 4) {
    throw new Error(`dalle: attention takes q, k, v and an optional mask, got ${inputs.length} inputs`);
  }
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.rank !== 4 || t.dtype !== 'f32') {
      throw new Error(`dalle: attention: ${name} must be f32 (B, H, T, D), got ${t.dtype} ${shapeStr(t.shape)}`);
    }
  }
  const [B, H, Tq, D] = q.shape;
  const [, , Tk, Dv] = v.shape;
  const ok = k.shape[0] === B && k.shape[1] === H && k.shape[3] === D && v.shape[0] === B && v.shape[1] === H &&
    v.shape[2] === k.shape[2];
  if (!ok) {
    throw new Error(
      `dalle: attention: shapes do not fit: q ${shapeStr(q.shape)} (B, H, Tq, D), k ${shapeStr(k.shape)} (B, H, Tk, D), ` +
        `v ${shapeStr(v.shape)} (B, H, Tk, Dv)`,
    );
  }
  if (D < 1 || Dv < 1) throw new Error(`dalle: attention: empty head width (q ${shapeStr(q.shape)}, v ${shapeStr(v.shape)})`);
  if (mask && (mask.dtype !== 'i32' || mask.rank !== 2 || mask.shape[0] !== Tq || mask.shape[1] !== Tk)) {
    throw new Error(
      `dalle: attention: the mask must be i32 (Tq, Tk) = (${Tq}, ${Tk}) with 1 where a query may attend, got ${mask.dtype} ${shapeStr(mask.shape)}`,
    );
  }
  return { B, H, Tq, Tk, D, Dv };
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

function scaleOf(attrs: AttentionAttrs, D: number): number {
  return attrs.scale ?? 1 / Math.sqrt(D);
}

export function refAttention(inputs: RefTensor[], attrs: AttentionAttrs): RefTensor {
  const [q, k, v, mask] = inputs;
  const [B, H, Tq, D] = q.shape;
  const [, , Tk, Dv] = v.shape;
  const scale = scaleOf(attrs, D);
  const out = refTensor([B, H, Tq, Dv]);
  const s = new Float64Array(Tk);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      let m = -Infinity;
      for (let j = 0; j < Tk; j++) {
        const allowed = (!mask || mask.data[i * Tk + j] !== 0) && (!attrs.causal || j <= i + Tk - Tq);
        if (!allowed) {
          s[j] = -Infinity;
          continue;
        }
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q.data[(bh * Tq + i) * D + d] * k.data[(bh * Tk + j) * D + d];
        s[j] = dot * scale;
        m = Math.max(m, s[j]);
      }
      if (m === -Infinity) continue; // no allowed key: zeros
      let sum = 0;
      for (let j = 0; j < Tk; j++) sum += s[j] === -Infinity ? 0 : Math.exp(s[j] - m);
      for (let j = 0; j < Tk; j++) {
        if (s[j] === -Infinity) continue;
        const p = Math.exp(s[j] - m) / sum;
        for (let e = 0; e < Dv; e++) out.data[(bh * Tq + i) * Dv + e] += p * v.data[(bh * Tk + j) * Dv + e];
      }
    }
  }
  return out;
}

export const attentionOp = defineOp<AttentionAttrs>({
  name: 'attention',
  kernels: ['attentionForward', 'attentionBackward'],
  forward(inputs, attrs, ctx) {
    const { B, H, Tq, Tk, D, Dv } = dims(inputs);
    const ops = inputs.slice(0, 3).map(operand);
    const mask = inputs[3] ? contiguous(inputs[3]) : null;
    const out = Tensor.empty([B, H, Tq, Dv], 'f32');
    const lse = Tensor.empty([B, H, Tq], 'f32');
    try {
      opKernel<AttentionForward>('attentionForward')(ops[0].t.address, ops[0].strides, ops[1].t.address, ops[1].strides,
        ops[2].t.address, ops[2].strides, mask?.address ?? null, out.address, lse.address, B, H, Tq, Tk, D, Dv,
        scaleOf(attrs, D), !!attrs.causal);
    } catch (err) {
      out.dispose();
      lse.dispose();
      throw err;
    } finally {
      for (const o of ops) if (o.owned) o.t.dispose();
      if (mask && mask !== inputs[3]) mask.dispose();
    }
    ctx.save('lse', lse);
    return out;
  },
  backward(ctx, g) {
    const { inputs, attrs } = ctx;
    const { B, H, Tq, Tk, D, Dv } = dims(inputs);
    const [q, k, v] = inputs;
    const dq = q.requiresGrad ? Tensor.empty(q.shape, 'f32') : null;
    const dk = k.requiresGrad ? Tensor.empty(k.shape, 'f32') : null;
    const dv = v.requiresGrad ? Tensor.empty(v.shape, 'f32') : null;
    const ops = [q, k, v, g].map(operand);
    const mask = inputs[3] ? contiguous(inputs[3]) : null;
    try {
      opKernel<AttentionBackward>('attentionBackward')(ops[0].t.address, ops[0].strides, ops[1].t.address,
        ops[1].strides, ops[2].t.address, ops[2].strides, mask?.address ?? null, ops[3].t.address, ops[3].strides,
        ctx.saved('lse').address, dq?.address ?? null, dk?.address ?? null, dv?.address ?? null, B, H, Tq, Tk, D, Dv,
        scaleOf(attrs, D), !!attrs.causal);
    } finally {
      for (const o of ops) if (o.owned) o.t.dispose();
      if (mask && mask !== inputs[3]) mask.dispose();
    }
    return inputs.length > 3 ? [dq, dk, dv, null] : [dq, dk, dv];
  },
  reference(inputs, attrs) {
    return refAttention(inputs, attrs);
  },
  cases(): OpCase<AttentionAttrs>[] {
    const i32: DType = 'i32';
    const c = (
      name: string, [B, H, Tq, Tk, D, Dv]: number[], attrs: AttentionAttrs, masked = false,
      extra: Partial<OpCase<AttentionAttrs>> = {},
    ): OpCase<AttentionAttrs> => ({
      name,
      inputs: [
        { shape: [B, H, Tq, D] },
        { shape: [B, H, Tk, D] },
        { shape: [B, H, Tk, Dv] },
        // Random 0/1 masks: arbitrary patterns, including (for small Tk) rows with no allowed key.
        ...(masked ? [{ shape: [Tq, Tk], dtype: i32, kind: 'int' as const, low: 0, high: 2, grad: false }] : []),
      ],
      attrs,
      ...extra,
    });
    return [
      c('1x1x1x1 d1', [1, 1, 1, 1, 1, 1], {}),
      c('tiny full', [1, 2, 3, 3, 2, 2], { causal: true }, false, { gradcheck: 'full' }),
      c('tiny masked full', [1, 1, 3, 4, 2, 3], {}, true, { gradcheck: 'full' }),
      c('2x3x7x7 d5 dv3', [2, 3, 7, 7, 5, 3], {}),
      c('causal 2x2x33 d16', [2, 2, 33, 33, 16, 16], { causal: true }),
      c('masked 1x2x7x9 d4', [1, 2, 7, 9, 4, 4], {}, true),
      c('masked + causal 1x1x9x9', [1, 1, 9, 9, 4, 6], { causal: true }, true),
      c('causal 129 (3 query blocks) d8', [1, 1, 129, 129, 8, 8], { causal: true }),
      c('masked 129 x 65 d8', [1, 2, 129, 65, 8, 8], { scale: 0.3 }, true),
      c('causal Tq < Tk (KV cache) 5 of 33', [1, 2, 5, 33, 8, 4], { causal: true }),
      c('causal Tq > Tk (leading rows see nothing)', [1, 1, 9, 4, 4, 4], { causal: true }),
      c('long keys 3 x 1031', [1, 1, 3, 1031, 4, 4], {}),
      // Tq <= 4 takes attention.cc's gathered path (the allowed keys listed per row): KV-cached decoding's shapes.
      c('gathered: 1 query, masked, 3x5x1x37 d7 dv5', [3, 5, 1, 37, 7, 5], {}, true),
      c('gathered: 1 query, causal, 2x3x1x300 d33 dv17', [2, 3, 1, 300, 33, 17], { causal: true }),
      c('gathered: 4 queries, masked + causal, 2x3x4x41 d9 dv6', [2, 3, 4, 41, 9, 6], { causal: true, scale: 0.7 }, true),
      c('blocked: 5 queries, masked, 2x2x5x41 d9 dv6', [2, 2, 5, 41, 9, 6], {}, true),
    ];
  },
});

/**
 * Attention: q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv), mask (Tq, Tk) i32 (1 = may attend) or null ->
 * (B, H, Tq, Dv). See the file comment for causal and for rows with no allowed key (zeros).
 */
export function attention(
  q: Tensor, k: Tensor, v: Tensor, mask?: Tensor | null, attrs: AttentionAttrs = {},
): Tensor {
  return applyOp(attentionOp, mask ? [q, k, v, mask] : [q, k, v], attrs);
}
