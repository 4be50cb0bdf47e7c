// Matrix products on the native GEMM. a: (..., M, K), b: (..., K, N) (or transposed with transA / transB), batch
// dimensions equal or absent on one side (a weight shared by every batch entry). Strided views whose last two
// dimensions are a (possibly transposed) row-major matrix go to the GEMM without a copy.
// Keys: B = batch (product of leading dims), M, N, K = the GEMM dimensions.
import { activeBackend, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, numel, shapeStr } from '../tensor/tensor';
import { DType } from '../tensor/dtype';

type Sgemm = (
  batch: number, transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  a: number, lda: number, strideA: number, b: number, ldb: number, strideB: number,
  beta: number, c: number, ldc: number, strideC: number,
) => void;
type GemmBf16 = (
  transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
  a: number, lda: number, b: number, ldb: number, beta: number, c: number, ldc: number,
) => void;

export interface MatmulAttrs {
  transA?: boolean;
  transB?: boolean;
}

/** A GEMM operand: address, whether it is stored transposed, its leading dimension and batch stride. */
interface Operand {
  address: number;
  trans: boolean;
  ld: number;
  batchStride: number;
  batch: number;
  owned?: Tensor; // a contiguous copy made for the GEMM, disposed after it
}

function operand(t: Tensor, trans: boolean): Operand {
  const r = t.rank;
  const rows = t.shape[r - 2];
  const cols = t.shape[r - 1];
  const batchShape = t.shape.slice(0, r - 2);
  const batch = numel(batchShape);
  // Leading dims must collapse into one batch stride.
  let batchStride = rows * cols;
  let collapsible = true;
  if (batchShape.length > 0) {
    batchStride = t.strides[r - 3];
    let expect = batchStride;
    for (let d = r - 3; d >= 0; d--) {
      if (t.shape[d] !== 1 && t.strides[d] !== expect) collapsible = false;
      expect *= t.shape[d];
    }
  }
  const rs = t.strides[r - 2];
  const cs = t.strides[r - 1];
  if (collapsible && (cs === 1 || cols === 1) && rs >= cols) {
    return { address: t.address, trans, ld: Math.max(rs, 1), batchStride: batch > 1 ? batchStride : 0, batch };
  }
  if (collapsible && (rs === 1 || rows === 1) && cs >= rows) {
    return { address: t.address, trans: !trans, ld: Math.max(cs, 1), batchStride: batch > 1 ? batchStride : 0, batch };
  }
  const c = t.copyContiguousRaw();
  return { address: c.address, trans, ld: cols, batchStride: rows * cols, batch, owned: c };
}

function gemmDims(a: readonly number[], b: readonly number[], { transA = false, transB = false }: MatmulAttrs) {
  if (a.length < 2 || b.length < 2) {
    throw new Error(`dalle: matmul needs rank >= 2 operands, got ${shapeStr(a)} and ${shapeStr(b)}`);
  }
  const M = transA ? a[a.length - 1] : a[a.length - 2];
  const K = transA ? a[a.length - 2] : a[a.length - 1];
  const Kb = transB ? b[b.length - 1] : b[b.length - 2];
  const N = transB ? b[b.length - 2] : b[b.length - 1];
  if (K !== Kb) {
    throw new Error(
      `dalle: matmul: inner dimensions differ: a ${shapeStr(a)}${transA ? 'ᵀ' : ''} and b ${shapeStr(b)}${transB ? 'ᵀ' : ''}`,
    );
  }
  const ba = a.slice(0, -2);
  const bb = b.slice(0, -2);
  let batchShape: number[];
  if (ba.length === 0) batchShape = [...bb];
  else if (bb.length === 0) batchShape = [...ba];
  else if (ba.length === bb.length && ba.every((d, i) => d === bb[i])) batchShape = [...ba];
  else throw new Error(`dalle: matmul: batch dimensions of ${shapeStr(a)} and ${shapeStr(b)} differ`);
  return { M, N, K, batchShape };
}

/** c (batch..., M, N) = alpha * op(a) @ op(b) + beta * c, on existing memory. */
function gemmInto(a: Tensor, b: Tensor, attrs: MatmulAttrs, c: Tensor, beta: number): void {
  const { M, N, K } = gemmDims(a.shape, b.shape, attrs);
  const batch = numel(c.shape.slice(0, -2));
  const oa = operand(a, !!attrs.transA);
  const ob = operand(b, !!attrs.transB);
  try {
    if (a.dtype === 'bf16' && b.dtype === 'bf16') {
      const g = opKernel<GemmBf16>('gemmBf16');
      for (let i = 0; i < batch; i++) {
        g(oa.trans, ob.trans, M, N, K, 1, oa.address + 2 * i * oa.batchStride, oa.ld,
          ob.address + 2 * i * ob.batchStride, ob.ld, beta, c.address + 4 * i * M * N, N);
      }
    } else if (batch > 1 && ob.batchStride === 0 && !oa.trans && oa.ld === K && oa.batchStride === M * K) {
      // A weight shared by the batch, activations stacked row-major: one (batch*M, K) x (K, N) GEMM.
      opKernel<Sgemm>('sgemmBatched')(1, false, ob.trans, batch * M, N, K, 1, oa.address, K, 0,
        ob.address, ob.ld, 0, beta, c.address, N, 0);
    } else {
      opKernel<Sgemm>('sgemmBatched')(batch, oa.trans, ob.trans, M, N, K, 1, oa.address, oa.ld, oa.batchStride,
        ob.address, ob.ld, ob.batchStride, beta, c.address, N, M * N);
    }
  } finally {
    oa.owned?.dispose();
    ob.owned?.dispose();
  }
}

function checkDtypes(a: Tensor, b: Tensor): void {
  const ok = (a.dtype === 'f32' && b.dtype === 'f32') || (a.dtype === 'bf16' && b.dtype === 'bf16');
  if (!ok) throw new Error(`dalle: matmul takes f32 x f32 or bf16 x bf16 (f32 output), got ${a.dtype} x ${b.dtype}`);
}

/** Sums a (batch..., R, C) gradient over the batch into (R, C), for an operand broadcast across the batch. */
function gradForShared(
  x: Tensor, otherIn: Tensor, g: Tensor, attrsForGrad: MatmulAttrs, first: 'g' | 'other',
): Tensor {
  let other = otherIn;
  // d(shared) = sum_b product_b: one GEMM per batch entry accumulating into the same output (beta = 1).
  const out = Tensor.zeros(x.shape, 'f32');
  if (other.rank > 2 && !other.isContiguous()) other = other.copyContiguousRaw();
  const batch = numel(g.shape.slice(0, -2));
  for (let i = 0; i < batch; i++) {
    const gi = g.viewAs(g.shape.slice(-2), g.strides.slice(-2), g.offset + i * (g.strides[g.rank - 3] ?? 0));
    const oi = other.rank > 2
      ? other.viewAs(other.shape.slice(-2), other.strides.slice(-2), other.offset + i * other.strides[other.rank - 3])
      : other;
    if (first === 'g') gemmInto(gi, oi, attrsForGrad, out, 1);
    else gemmInto(oi, gi, attrsForGrad, out, 1);
    gi.dispose();
    if (oi !== other) oi.dispose();
  }
  if (other !== otherIn) other.dispose();
  return out;
}

function refMatmul(a: RefTensor, b: RefTensor, { transA = false, transB = false }: MatmulAttrs): RefTensor {
  const { M, N, K, batchShape } = gemmDims(a.shape, b.shape, { transA, transB });
  const batch = numel(batchShape);
  const out = refTensor([...batchShape, M, N]);
  const aBatched = a.shape.length > 2;
  const bBatched = b.shape.length > 2;
  for (let bi = 0; bi < batch; bi++) {
    const ao = aBatched ? bi * M * K : 0;
    const bo = bBatched ? bi * K * N : 0;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = transA ? a.data[ao + k * M + i] : a.data[ao + i * K + k];
          const bv = transB ? b.data[bo + j * K + k] : b.data[bo + k * N + j];
          s += av * bv;
        }
        out.data[bi * M * N + i * N + j] = s;
      }
    }
  }
  return out;
}

export const matmulOp = defineOp<MatmulAttrs>({
  name: 'matmul',
  kernels: ['sgemmBatched', 'gemmBf16'],
  forward([a, b], attrs) {
    checkDtypes(a, b);
    const { M, N, batchShape } = gemmDims(a.shape, b.shape, attrs);
    const c = Tensor.empty([...batchShape, M, N], 'f32');
    gemmInto(a, b, attrs, c, 0);
    return c;
  },
  backward(ctx, gIn) {
    const [a, b] = ctx.inputs;
    const g = gIn.isContiguous() ? gIn : gIn.copyContiguousRaw();
    const { transA = false, transB = false } = ctx.attrs;
    const aShared = a.rank === 2 && g.rank > 2;
    const bShared = b.rank === 2 && g.rank > 2;
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    const a32 = a.dtype === 'f32' ? a : null;
    const b32 = b.dtype === 'f32' ? b : null;
    const aF = a32 ?? castTo32(a);
    const bF = b32 ?? castTo32(b);
    if (a.requiresGrad) {
      // C = A B: dA = dC Bᵀ; with A stored transposed (Aᵀ given), d(Aᵀ) = B dCᵀ.
      const attrsDa: MatmulAttrs = transA ? { transA: transB, transB: true } : { transA: false, transB: !transB };
      if (aShared) da = transA ? gradForShared(a, bF, g, attrsDa, 'other') : gradForShared(a, bF, g, attrsDa, 'g');
      else da = transA ? mm(bF, g, attrsDa) : mm(g, bF, attrsDa);
    }
    if (b.requiresGrad) {
      // dB = Aᵀ dC; with B stored transposed, d(Bᵀ) = dCᵀ A.
      const attrsDb: MatmulAttrs = transB ? { transA: true, transB: transA } : { transA: !transA, transB: false };
      if (bShared && !transA && aF.isContiguous()) {
        // The batch folds into the reduction: dB = A2ᵀ G2 with A2 = (batch*M, K), G2 = (batch*M, N).
        const a2 = aF.viewAs([numel(aF.shape) / aF.shape[aF.rank - 1], aF.shape[aF.rank - 1]], [aF.shape[aF.rank - 1], 1], aF.offset);
        const g2 = g.viewAs([numel(g.shape) / g.shape[g.rank - 1], g.shape[g.rank - 1]], [g.shape[g.rank - 1], 1], g.offset);
        db = transB ? mm(g2, a2, { transA: true }) : mm(a2, g2, { transA: true });
        a2.dispose();
        g2.dispose();
      } else if (bShared) db = transB ? gradForShared(b, aF, g, attrsDb, 'g') : gradForShared(b, aF, g, attrsDb, 'other');
      else db = transB ? mm(g, aF, attrsDb) : mm(aF, g, attrsDb);
    }
    if (aF !== a) aF.dispose();
    if (bF !== b) bF.dispose();
    if (g !== gIn) g.dispose();
    return [da, db];
  },
  reference([a, b], attrs) {
    return refMatmul(a, b, attrs);
  },
  cases(): OpCase<MatmulAttrs>[] {
    const cases: OpCase<MatmulAttrs>[] = [];
    const sizes: Array<[number, number, number]> = [
      [1, 1, 1], [7, 33, 5], [33, 7, 129], [129, 65, 33], [2, 257, 3],
    ];
    for (const [M, K, N] of sizes) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          cases.push({
            name: `${M}x${K}x${N} tA=${transA} tB=${transB}`,
            inputs: [{ shape: transA ? [K, M] : [M, K] }, { shape: transB ? [N, K] : [K, N] }],
            attrs: { transA, transB },
            // Each output sums K unit-scale products: float32 rounding grows like sqrt(K).
            tol: { atol: 1e-5 * Math.sqrt(K) },
          });
        }
      }
    }
    cases.push({ name: 'batched', inputs: [{ shape: [3, 7, 33] }, { shape: [3, 33, 5] }], attrs: {} });
    cases.push({ name: 'batched tB', inputs: [{ shape: [2, 3, 7, 9] }, { shape: [2, 3, 5, 9] }], attrs: { transB: true } });
    cases.push({ name: 'shared weight', inputs: [{ shape: [4, 7, 33] }, { shape: [33, 6] }], attrs: {} });
    cases.push({ name: 'shared weight tB', inputs: [{ shape: [4, 7, 33] }, { shape: [6, 33] }], attrs: { transB: true } });
    cases.push({ name: 'shared lhs tA', inputs: [{ shape: [33, 7] }, { shape: [3, 33, 5] }], attrs: { transA: true } });
    cases.push({ name: 'tiny full', inputs: [{ shape: [2, 3] }, { shape: [3, 4] }], attrs: {}, gradcheck: 'full' });
    cases.push({
      name: 'bf16',
      inputs: [{ shape: [33, 65], dtype: 'bf16' as DType }, { shape: [65, 17], dtype: 'bf16' as DType }],
      attrs: {},
    });
    return cases;
  },
});

function castTo32(t: Tensor): Tensor {
  // Local import avoids a cycle at module load (cast.ts imports view.ts only).
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { cast } = require('./cast') as typeof import('./cast');
  return cast(t, 'f32');
}

function mm(a: Tensor, b: Tensor, attrs: MatmulAttrs): Tensor {
  return applyOp(matmulOp, [a, b], attrs);
}

/** a @ b with optional transposes; see the file comment for shapes. */
export function matmul(a: Tensor, b: Tensor, attrs: MatmulAttrs = {}): Tensor {
  return applyOp(matmulOp, [a, b], attrs);
}
