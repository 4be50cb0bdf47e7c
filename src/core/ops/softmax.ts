// Softmax and log-softmax over the last axis (numerically stable: the row maximum is subtracted first), with fused
// backward kernels (native/cpu/softmax.cc):
//   softmax:    dx = y * (g - sum(g * y))
//   logSoftmax: dx = g - softmax(x) * sum(g) = g - exp(y) * sum(g)
// Both backward passes need only the output y, so nothing else is saved.
// Keys: R = rows (product of the leading dims), C = the last dimension.
import { activeBackend, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { contiguous } from './view';

type SoftmaxForward = (x: number, y: number, rows: number, cols: number, log: boolean) => void;
type SoftmaxBackward = (y: number, g: number, dx: number, rows: number, cols: number, log: boolean) => void;

function rowsCols(x: Tensor, op: string): [number, number] {
  if (x.rank < 1) throw new Error(`dalle: ${op} needs a tensor of rank >= 1 (it normalizes the last axis), got a scalar`);
  if (x.dtype !== 'f32') throw new Error(`dalle: ${op} takes f32, got ${x.dtype} ${shapeStr(x.shape)} (cast it first)`);
  const C = x.shape[x.rank - 1];
  return [C === 0 ? 0 : x.size / C, C];
}

function forward(x: Tensor, log: boolean): Tensor {
  const op = log ? 'logSoftmax' : 'softmax';
  const [R, C] = rowsCols(x, op);
  const xc = contiguous(x);
  const y = Tensor.empty(x.shape, 'f32');
  try {
    opKernel<SoftmaxForward>('softmaxForward')(xc.address, y.address, R, C, log);
  } finally {
    if (xc !== x) xc.dispose();
  }
  return y;
}

function backward(y: Tensor, g: Tensor, log: boolean): Tensor {
  const [R, C] = rowsCols(y, log ? 'logSoftmax' : 'softmax');
  const gc = contiguous(g);
  const dx = Tensor.empty(y.shape, 'f32');
  try {
    opKernel<SoftmaxBackward>('softmaxBackward')(y.address, gc.address, dx.address, R, C, log);
  } finally {
    if (gc !== g) gc.dispose();
  }
  return dx;
}

/** float64 (log-)softmax over the last axis. */
export function refSoftmax(x: RefTensor, log: boolean): RefTensor {
  const C = x.shape[x.shape.length - 1];
  const out = refTensor(x.shape);
  for (let r = 0; C > 0 && r < x.data.length / C; r++) {
    let m = -Infinity;
    for (let j = 0; j < C; j++) m = Math.max(m, x.data[r * C + j]);
    let s = 0;
    for (let j = 0; j < C; j++) s += Math.exp(x.data[r * C + j] - m);
    const lse = m + Math.log(s);
    for (let j = 0; j < C; j++) {
      const l = x.data[r * C + j] - lse;
      out.data[r * C + j] = log ? l : Math.exp(l);
    }
  }
  return out;
}

function softmaxCases(): OpCase<Record<string, never>>[] {
  return [
    { name: '1x1', inputs: [{ shape: [1, 1] }], attrs: {} },
    { name: 'tiny full', inputs: [{ shape: [2, 3] }], attrs: {}, gradcheck: 'full' },
    { name: '7x33', inputs: [{ shape: [7, 33] }], attrs: {} },
    { name: '3x5x129', inputs: [{ shape: [3, 5, 129] }], attrs: {} },
    { name: 'rank 1', inputs: [{ shape: [17] }], attrs: {} },
    { name: '3x1031', inputs: [{ shape: [3, 1031] }], attrs: {} },
    { name: '2x4099 uniform', inputs: [{ shape: [2, 4099], kind: 'uniform' }], attrs: {} },
  ];
}

export const softmaxOp = defineOp<Record<string, never>>({
  name: 'softmax',
  kernels: ['softmaxForward', 'softmaxBackward'],
  forward([x]) {
    return forward(x, false);
  },
  backward(ctx, g) {
    return [backward(ctx.output, g, false)];
  },
  reference([x]) {
    return refSoftmax(x, false);
  },
  cases: softmaxCases,
});

export const logSoftmaxOp = defineOp<Record<string, never>>({
  name: 'logSoftmax',
  kernels: ['softmaxForward', 'softmaxBackward'],
  forward([x]) {
    return forward(x, true);
  },
  backward(ctx, g) {
    return [backward(ctx.output, g, true)];
  },
  reference([x]) {
    return refSoftmax(x, true);
  },
  cases: softmaxCases,
});

/** softmax over the last axis: exp(x - max) / sum(exp(x - max)). x: f32 (..., C). */
export function softmax(x: Tensor): Tensor {
  return applyOp(softmaxOp, [x], {});
}

/** log-softmax over the last axis: x - logsumexp(x). x: f32 (..., C). */
export function logSoftmax(x: Tensor): Tensor {
  return applyOp(logSoftmaxOp, [x], {});
}
