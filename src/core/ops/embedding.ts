// Embedding lookup (native/cpu/embedding.cc): table (V, C) f32, indices i32 of any shape (...) -> (..., C).
// Backward: the table's gradient is the scatter-add of the output gradient's rows at their indices (rows of repeated
// indices are added in position order: deterministic for any thread count); the indices get no gradient.
// An index outside [0, V) is an error naming the index, its position and V, raised before any memory is touched.
import { activeBackend, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { contiguous } from './view';

type EmbeddingForward = (table: number, V: number, C: number, idx: number, idxShape: number[], out: number) => void;
type EmbeddingBackward = (g: number, idx: number, N: number, V: number, C: number, dtable: number) => void;

function check(table: Tensor, indices: Tensor): [number, number] {
  if (table.rank !== 2 || table.dtype !== 'f32') {
    throw new Error(`dalle: embedding: the table must be f32 (V, C), got ${table.dtype} ${shapeStr(table.shape)}`);
  }
  if (indices.dtype !== 'i32') {
    throw new Error(`dalle: embedding: indices must be i32, got ${indices.dtype} ${shapeStr(indices.shape)}`);
  }
  return [table.shape[0], table.shape[1]];
}

export function refEmbedding(table: RefTensor, indices: RefTensor): RefTensor {
  const [V, C] = table.shape;
  const out = refTensor([...indices.shape, C]);
  indices.data.forEach((ix, n) => {
    if (!(ix >= 0 && ix < V)) throw new Error(`refEmbedding: index ${ix} out of range for V = ${V}`);
    for (let c = 0; c < C; c++) out.data[n * C + c] = table.data[ix * C + c];
  });
  return out;
}

export const embeddingOp = defineOp<Record<string, never>>({
  name: 'embedding',
  kernels: ['embeddingForward', 'embeddingBackward'],
  forward([table, indices]) {
    const [V, C] = check(table, indices);
    const out = Tensor.empty([...indices.shape, C], 'f32');
    const tc = contiguous(table);
    const ic = contiguous(indices);
    try {
      opKernel<EmbeddingForward>('embeddingForward')(tc.address, V, C, ic.address, [...indices.shape], out.address);
    } catch (err) {
      out.dispose();
      throw err;
    } finally {
      if (tc !== table) tc.dispose();
      if (ic !== indices) ic.dispose();
    }
    return out;
  },
  backward(ctx, g) {
    const [table, indices] = ctx.inputs;
    if (!table.requiresGrad) return [null, null];
    const [V, C] = check(table, indices);
    const dtable = Tensor.empty([V, C], 'f32');
    const gc = contiguous(g);
    const ic = contiguous(indices);
    try {
      opKernel<EmbeddingBackward>('embeddingBackward')(gc.address, ic.address, indices.size, V, C, dtable.address);
    } finally {
      if (gc !== g) gc.dispose();
      if (ic !== indices) ic.dispose();
    }
    return [dtable, null];
  },
  reference([table, indices]) {
    return refEmbedding(table, indices);
  },
  cases(): OpCase<Record<string, never>>[] {
    const c = (name: string, V: number, C: number, idx: number[], extra: Partial<OpCase<Record<string, never>>> = {}) => ({
      name,
      inputs: [{ shape: [V, C] }, { shape: idx, kind: 'int' as const, low: 0, high: V, grad: false }],
      attrs: {},
      ...extra,
    });
    return [
      c('1x1', 1, 1, [1]),
      c('tiny full (repeats)', 3, 2, [5], { gradcheck: 'full' }),
      c('7x33, (5, 3) indices', 7, 33, [5, 3]),
      c('33x129', 33, 129, [40]),
      c('129x1031, (2, 3, 4) indices', 129, 1031, [2, 3, 4]),
      c('scalar index', 9, 7, []),
      c('many repeats 5x300', 5, 300, [257]),
    ];
  },
});

/** table (V, C) f32 at indices i32 (...) -> (..., C). */
export function embedding(table: Tensor, indices: Tensor): Tensor {
  return applyOp(embeddingOp, [table, indices], {});
}
