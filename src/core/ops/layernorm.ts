// Layer normalization over the last axis (Ba et al., 2016), with a fused backward (native/cpu/norm.cc).
// Keys: R = rows (product of the leading dims), C = the last dimension.
//   x (..., C), gain (C), bias (C) -> y = (x - mean) / sqrt(var + eps) * gain + bias   (biased variance, as PyTorch)
// The forward saves mean and rstd = 1 / sqrt(var + eps) (R each); the backward gives dx, dgain and dbias in one pass.
import { activeBackend, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { contiguous } from './view';

export interface LayerNormAttrs {
  /** Added to the variance (default 1e-5, as PyTorch). */
  eps?: number;
}

type LayerNormForward = (
  x: number, gain: number, bias: number, y: number, mean: number, rstd: number, rows: number, cols: number, eps: number,
) => void;
type LayerNormBackward = (
  x: number, gain: number, mean: number, rstd: number, g: number, dx: number | null, dgain: number | null,
  dbias: number | null, rows: number, cols: number,
) => void;

const DEFAULT_EPS = 1e-5;

function check(x: Tensor, gain: Tensor, bias: Tensor): [number, number] {
  if (x.rank < 1) throw new Error('dalle: layerNorm needs a tensor of rank >= 1 (it normalizes the last axis), got a scalar');
  const C = x.shape[x.rank - 1];
  for (const [name, t] of [['x', x], ['gain', gain], ['bias', bias]] as const) {
    if (t.dtype !== 'f32') throw new Error(`dalle: layerNorm: ${name} must be f32, got ${t.dtype} ${shapeStr(t.shape)}`);
  }
  if (gain.rank !== 1 || gain.shape[0] !== C || bias.rank !== 1 || bias.shape[0] !== C) {
    throw new Error(
      `dalle: layerNorm: gain ${shapeStr(gain.shape)} and bias ${shapeStr(bias.shape)} must both be (${C}) for x ${shapeStr(x.shape)}`,
    );
  }
  if (C === 0) throw new Error(`dalle: layerNorm: the normalized axis of x ${shapeStr(x.shape)} is empty`);
  return [x.size / C, C];
}

/** Calls fn with contiguous versions of ts, disposing the copies it made. */
function withContiguous<T>(ts: Tensor[], fn: (cs: Tensor[]) => T): T {
  const cs: Tensor[] = [];
  try {
    for (const t of ts) cs.push(contiguous(t));
    return fn(cs);
  } finally {
    cs.forEach((c, i) => c !== ts[i] && c.dispose());
  }
}

function refLayerNorm(x: RefTensor, gain: RefTensor, bias: RefTensor, eps: number): RefTensor {
  const C = x.shape[x.shape.length - 1];
  const out = refTensor(x.shape);
  for (let r = 0; r < x.data.length / C; r++) {
    let m = 0;
    for (let j = 0; j < C; j++) m += x.data[r * C + j];
    m /= C;
    let v = 0;
    for (let j = 0; j < C; j++) v += (x.data[r * C + j] - m) ** 2;
    v /= C;
    const rs = 1 / Math.sqrt(v + eps);
    for (let j = 0; j < C; j++) out.data[r * C + j] = (x.data[r * C + j] - m) * rs * gain.data[j] + bias.data[j];
  }
  return out;
}

export const layerNormOp = defineOp<LayerNormAttrs>({
  name: 'layerNorm',
  kernels: ['layerNormForward', 'layerNormBackward'],
  forward([x, gain, bias], { eps = DEFAULT_EPS }, ctx) {
    const [R, C] = check(x, gain, bias);
    const y = Tensor.empty(x.shape, 'f32');
    const mean = Tensor.empty([R], 'f32');
    const rstd = Tensor.empty([R], 'f32');
    withContiguous([x, gain, bias], ([xc, gc, bc]) =>
      opKernel<LayerNormForward>('layerNormForward')(xc.address, gc.address, bc.address, y.address, mean.address,
        rstd.address, R, C, eps),
    );
    ctx.save('mean', mean);
    ctx.save('rstd', rstd);
    return y;
  },
  backward(ctx, g) {
    const [x, gain, bias] = ctx.inputs;
    const [R, C] = check(x, gain, bias);
    const dx = x.requiresGrad ? Tensor.empty(x.shape, 'f32') : null;
    const dgain = gain.requiresGrad ? Tensor.empty([C], 'f32') : null;
    const dbias = bias.requiresGrad ? Tensor.empty([C], 'f32') : null;
    withContiguous([x, gain, g], ([xc, gc, gg]) =>
      opKernel<LayerNormBackward>('layerNormBackward')(xc.address, gc.address, ctx.saved('mean').address,
        ctx.saved('rstd').address, gg.address, dx?.address ?? null, dgain?.address ?? null, dbias?.address ?? null, R, C),
    );
    return [dx, dgain, dbias];
  },
  reference([x, gain, bias], { eps = DEFAULT_EPS }) {
    return refLayerNorm(x, gain, bias, eps);
  },
  cases(): OpCase<LayerNormAttrs>[] {
    const c = (name: string, shape: number[], attrs: LayerNormAttrs = {}, extra: Partial<OpCase<LayerNormAttrs>> = {}) => {
      const C = shape[shape.length - 1];
      return { name, inputs: [{ shape }, { shape: [C] }, { shape: [C] }], attrs, ...extra };
    };
    return [
      c('1x1', [1, 1]),
      c('tiny full', [2, 3], {}, { gradcheck: 'full' }),
      c('7x33', [7, 33]),
      c('2x3x129 eps 1e-3', [2, 3, 129], { eps: 1e-3 }),
      c('rank 1', [7]),
      c('5x1031', [5, 1031]),
      c('many rows 300x9', [300, 9]),
    ];
  },
});

/** Layer normalization over the last axis: x (..., C), gain (C), bias (C); eps default 1e-5. */
export function layerNorm(x: Tensor, gain: Tensor, bias: Tensor, attrs: LayerNormAttrs = {}): Tensor {
  return applyOp(layerNormOp, [x, gain, bias], attrs);
}
