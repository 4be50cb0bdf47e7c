// The dVAE's fused codebook ops (native/cpu/codebook.cc): the relaxed codes (relaxedCodes, at the end) and
// codebookStats, the statistics of the per-cell softmax over its codebook logits, in one native pass
// (native/cpu/codebook.cc). Logits (B, V, h, w), q = softmax over V at each of the B h w cells:
//   out (V + 1):  out[v] = sum over cells of q_v  (v < V; the code usage mean is out[v] / (B h w))
//                 out[V] = sum over cells of sum_v q_v log q_v  (the KL to the uniform prior is out[V] + B h w log V)
//   backward:     dl_v = q_v (g_v - sum_u q_u g_u + g_V (log q_v - f)),  f = sum_u q_u log q_u of the cell
// It stands for logSoftmax, exp, mul, sum and mean over a codebook-last copy of the logits (the composite that
// codebookStatsComposite builds, and that backends without the kernels run): nine passes over the step's largest
// tensors and a transpose, forward and backward, where the fused kernels read the NCHW logits in place (lanes along
// cells) twice.
import { backendFor, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp, opMissingKernels } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { randGumbel } from '../tensor/random';
import { Philox } from '../tensor/rng';
import { Tensor, shapeStr } from '../tensor/tensor';
import { concat } from './concat';
import { add, exp, mul } from './elementwise';
import { sum } from './reduce';
import { logSoftmax, softmax } from './softmax';
import { contiguous, permute, reshape } from './view';

type StatsForward = (logits: number, out: number, B: number, V: number, HW: number) => void;
type StatsBackward = (logits: number, g: number, dl: number, B: number, V: number, HW: number) => void;

function dims(x: Tensor, op = 'codebookStats'): { B: number; V: number; HW: number } {
  if (x.rank !== 4) throw new Error(`dalle: ${op} needs logits (B, V, h, w), got ${shapeStr(x.shape)}`);
  if (x.dtype !== 'f32') throw new Error(`dalle: ${op} takes f32 logits, got ${x.dtype} ${shapeStr(x.shape)}`);
  const [B, V, h, w] = x.shape;
  if (B * V * h * w === 0) throw new Error(`dalle: ${op} needs non-empty logits, got ${shapeStr(x.shape)}`);
  return { B, V, HW: h * w };
}

/** float64 reference: (V + 1) as in the module comment. */
function refCodebookStats([x]: RefTensor[]): RefTensor {
  const [B, V, h, w] = x.shape;
  const HW = h * w;
  const out = refTensor([V + 1]);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < HW; j++) {
      const at = (v: number) => x.data[(b * V + v) * HW + j];
      let m = -Infinity;
      for (let v = 0; v < V; v++) m = Math.max(m, at(v));
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(at(v) - m);
      for (let v = 0; v < V; v++) {
        const lq = at(v) - m - Math.log(s);
        out.data[v] += Math.exp(lq);
        out.data[V] += Math.exp(lq) * lq;
      }
    }
  return out;
}

export const codebookStatsOp = defineOp<Record<string, never>>({
  name: 'codebookStats',
  kernels: ['codebookStatsForward', 'codebookStatsBackward'],
  fusionOf: ['logSoftmax', 'exp', 'mul', 'sum'],
  forward([x]) {
    const { B, V, HW } = dims(x);
    const xc = contiguous(x);
    const out = Tensor.empty([V + 1], 'f32');
    try {
      opKernel<StatsForward>('codebookStatsForward')(xc.address, out.address, B, V, HW);
    } finally {
      if (xc !== x) xc.dispose();
    }
    return out;
  },
  backward(ctx, g) {
    const [x] = ctx.inputs;
    const { B, V, HW } = dims(x);
    const xc = contiguous(x);
    const gc = contiguous(g);
    const dl = Tensor.empty(x.shape, 'f32');
    try {
      opKernel<StatsBackward>('codebookStatsBackward')(xc.address, gc.address, dl.address, B, V, HW);
    } finally {
      if (xc !== x) xc.dispose();
      if (gc !== g) gc.dispose();
    }
    return [dl];
  },
  reference: refCodebookStats,
  cases(): OpCase<Record<string, never>>[] {
    return [
      { name: 'one code, one cell', inputs: [{ shape: [1, 1, 1, 1] }], attrs: {} },
      { name: 'tiny full', inputs: [{ shape: [2, 3, 1, 2] }], attrs: {}, gradcheck: 'full' },
      { name: 'odd cells (a partial vector)', inputs: [{ shape: [2, 7, 3, 5] }], attrs: {} },
      { name: '33 codes, 17 cells', inputs: [{ shape: [3, 33, 1, 17] }], attrs: {} },
      { name: '129 codes, 4x4 grid', inputs: [{ shape: [2, 129, 4, 4] }], attrs: {} },
      { name: 'wide logits', inputs: [{ shape: [1, 64, 6, 7], kind: 'uniform' }], attrs: {} },
    ];
  },
});

/**
 * The composite codebookStats stands for: the same (V + 1) values from logSoftmax, exp, mul and sum over the
 * codebook-last logits (what a backend without the fused kernels runs).
 */
export function codebookStatsComposite(logits: Tensor): Tensor {
  const lq = logSoftmax(permute(logits, [0, 2, 3, 1])); // (B, h, w, V)
  const q = exp(lq);
  const qSum = sum(q, [0, 1, 2]); // (V)
  return concat([qSum, reshape(sum(mul(q, lq)), [1])], 0); // (V + 1)
}

/**
 * Per-code sums of q = softmax over the codes of each cell, then the sum of q log q: logits (B, V, h, w) -> (V + 1).
 * Fused where the backend has the kernels, else the composite.
 */
export function codebookStats(logits: Tensor): Tensor {
  if (opMissingKernels(codebookStatsOp, backendFor(logits.device)).length === 0) {
    return applyOp(codebookStatsOp, [logits], {});
  }
  return codebookStatsComposite(logits);
}

// ---- relaxedCodes: the gumbel-softmax sample, noise drawn inside --------------------------------------------------
// z = softmax((l + g) / tau) over the V codes of each cell, logits and z (B, V, h, w), g the Gumbel noise of the Philox
// stream at (key, offset) laid out codebook-last ((B, h, w, V): randGumbel's tensor of that shape, word for word). The
// kernel draws each block of cells' noise into a buffer, so the noise tensor, the transposes to and from codebook-last,
// and the add, scale and softmax passes of the composite (relaxedCodesComposite) are never made.
//   backward: dl = z (dz - sum_v z dz) / tau (from the output alone)

/** Where the noise comes from and the temperature (u64 offset as two u32 halves). */
export interface RelaxedCodesAttrs {
  tau: number;
  key0: number;
  key1: number;
  offsetLo: number;
  offsetHi: number;
}

type RelaxedForward = (logits: number, z: number, B: number, V: number, HW: number, k0: number, k1: number,
  offLo: number, offHi: number, invTau: number) => void;
type RelaxedBackward = (z: number, dz: number, dl: number, B: number, V: number, HW: number, invTau: number) => void;

function refRelaxedCodes([x]: RefTensor[], a: RelaxedCodesAttrs): RefTensor {
  const [B, V, h, w] = x.shape;
  const HW = h * w;
  const rng = new Philox((BigInt(a.key1) << 32n) | BigInt(a.key0), (BigInt(a.offsetHi) << 32n) | BigInt(a.offsetLo));
  const g = rng.fillGumbel(new Float64Array(B * HW * V)); // (B, h, w, V)
  const out = refTensor(x.shape);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < HW; j++) {
      const a_ = (v: number) => (x.data[(b * V + v) * HW + j] + g[(b * HW + j) * V + v]) / a.tau;
      let m = -Infinity;
      for (let v = 0; v < V; v++) m = Math.max(m, a_(v));
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(a_(v) - m);
      for (let v = 0; v < V; v++) out.data[(b * V + v) * HW + j] = Math.exp(a_(v) - m) / s;
    }
  return out;
}

export const relaxedCodesOp = defineOp<RelaxedCodesAttrs>({
  name: 'relaxedCodes',
  kernels: ['relaxedCodesForward', 'relaxedCodesBackward'],
  fusionOf: ['add', 'affine', 'softmax'],
  forward([x], a) {
    const { B, V, HW } = dims(x, 'relaxedCodes');
    if (!(a.tau > 0) || !Number.isFinite(a.tau)) throw new Error(`dalle: relaxedCodes: temperature must be > 0, got ${a.tau}`);
    const xc = contiguous(x);
    const z = Tensor.empty(x.shape, 'f32');
    try {
      opKernel<RelaxedForward>('relaxedCodesForward')(xc.address, z.address, B, V, HW, a.key0, a.key1, a.offsetLo,
        a.offsetHi, 1 / a.tau);
    } finally {
      if (xc !== x) xc.dispose();
    }
    return z;
  },
  backward(ctx, g) {
    const z = ctx.output;
    const { B, V, HW } = dims(z, 'relaxedCodes');
    const gc = contiguous(g);
    const dl = Tensor.empty(z.shape, 'f32');
    try {
      opKernel<RelaxedBackward>('relaxedCodesBackward')(z.address, gc.address, dl.address, B, V, HW, 1 / ctx.attrs.tau);
    } finally {
      if (gc !== g) gc.dispose();
    }
    return [dl];
  },
  reference: refRelaxedCodes,
  cases(): OpCase<RelaxedCodesAttrs>[] {
    const at = (tau: number, offsetLo = 3): RelaxedCodesAttrs => ({ tau, key0: 12345, key1: 7, offsetLo, offsetHi: 0 });
    return [
      { name: 'one code', inputs: [{ shape: [1, 1, 1, 1] }], attrs: at(1) },
      { name: 'tiny full', inputs: [{ shape: [2, 3, 1, 2] }], attrs: at(0.7), gradcheck: 'full' },
      { name: 'odd cells', inputs: [{ shape: [2, 7, 3, 5] }], attrs: at(0.5, 1) },
      { name: '33 codes, 17 cells, offset past a block', inputs: [{ shape: [3, 33, 1, 17] }], attrs: at(2, 4097) },
      { name: '129 codes, 4x4 grid', inputs: [{ shape: [2, 129, 4, 4] }], attrs: at(1) },
    ];
  },
});

/** The composite relaxedCodes stands for: randGumbel codebook-last, add, scale, softmax, and back to (B, V, h, w). */
export function relaxedCodesComposite(logits: Tensor, tau: number, rng: Philox): Tensor {
  const last = permute(logits, [0, 2, 3, 1]); // (B, h, w, V)
  const g = randGumbel(rng, last.shape, logits.device);
  return permute(softmax(mul(add(last, g), 1 / tau)), [0, 3, 1, 2]); // (B, V, h, w)
}

/**
 * softmax((logits + g) / tau) over the codes of each cell, g ~ Gumbel(0, 1) drawn from `rng` (logits.size words, in
 * the order randGumbel of the codebook-last shape draws them): (B, V, h, w) -> (B, V, h, w). Fused where the backend
 * has the kernels, else the composite; both advance rng by the same words and give the same values.
 */
export function relaxedCodes(logits: Tensor, tau: number, rng: Philox): Tensor {
  if (opMissingKernels(relaxedCodesOp, backendFor(logits.device)).length > 0) return relaxedCodesComposite(logits, tau, rng);
  dims(logits, 'relaxedCodes');
  const { key, offset } = rng.reserve(logits.size);
  return applyOp(relaxedCodesOp, [logits], {
    tau, key0: key[0], key1: key[1], offsetLo: Number(offset & 0xffffffffn), offsetHi: Number(offset >> 32n),
  });
}
