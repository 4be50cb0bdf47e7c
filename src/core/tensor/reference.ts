// Plain float64 tensors for the reference implementations every op carries (tests compare kernels with them).
import { Shape, contiguousStrides, numel, shapeStr } from './tensor';

export interface RefTensor {
  shape: number[];
  data: Float64Array;
}

export function refTensor(shape: Shape, data?: ArrayLike<number>): RefTensor {
  const n = numel(shape);
  if (data && data.length !== n) throw new Error(`refTensor: ${data.length} values for shape ${shapeStr(shape)}`);
  return { shape: [...shape], data: data ? Float64Array.from(data) : new Float64Array(n) };
}

/** Calls fn(flatIndex, multiIndex) for every element in row-major order. */
export function refForEach(shape: Shape, fn: (flat: number, index: number[]) => void): void {
  const n = numel(shape);
  const idx = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < n; flat++) {
    fn(flat, idx);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

export function refOffset(shape: Shape, index: readonly number[]): number {
  const strides = contiguousStrides(shape);
  let o = 0;
  for (let i = 0; i < index.length; i++) o += index[i] * strides[i];
  return o;
}

/** numpy-style broadcast of two shapes; throws on mismatch. */
export function broadcastShapes(a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`dalle: shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Reads `t` at a multi-index of the broadcast output shape `outShape`. */
export function refBroadcastGet(t: RefTensor, outShape: Shape, index: readonly number[]): number {
  const off = outShape.length - t.shape.length;
  let flat = 0;
  let stride = 1;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    const i = t.shape[d] === 1 ? 0 : index[d + off];
    flat += i * stride;
    stride *= t.shape[d];
  }
  return t.data[flat];
}
