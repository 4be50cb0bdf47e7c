// View ops: reshape, permute (transpose), slice and contiguous share storage where they can (no copy) and are
// differentiable like any other op.
import { activeBackend, opKernel } from '../backend/registry';
import { itemBytes } from '../tensor/dtype';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refForEach, refOffset, refTensor } from '../tensor/reference';
import { Shape, Tensor, contiguousStrides, numel, shapeStr } from '../tensor/tensor';

// ---- contiguous --------------------------------------------------------------------------------------------------

export const contiguousOp = defineOp<Record<string, never>>({
  name: 'contiguous',
  kernels: [],
  forward([x]) {
    return x.copyContiguousRaw();
  },
  backward(_ctx, g) {
    return [g];
  },
  reference([x]) {
    return refTensor(x.shape, x.data);
  },
  cases() {
    return [{ inputs: [{ shape: [7, 33] }], attrs: {} }, { inputs: [{ shape: [1] }], attrs: {} }];
  },
});

/** x itself when already contiguous (no copy, no new tape entry), else a contiguous copy. */
export function contiguous(x: Tensor): Tensor {
  return x.isContiguous() ? x : applyOp(contiguousOp, [x], {});
}

// ---- reshape -----------------------------------------------------------------------------------------------------

/** Resolves one -1 entry and checks the element count. */
export function resolveShape(from: Shape, to: readonly number[]): number[] {
  const n = numel(from);
  const out = [...to];
  const free = out.indexOf(-1);
  if (free >= 0) {
    const known = out.reduce((p, d, i) => (i === free ? p : p * d), 1);
    if (known === 0 || n % known !== 0) throw new Error(`dalle: cannot reshape ${shapeStr(from)} to ${shapeStr(to)}`);
    out[free] = n / known;
  }
  if (numel(out) !== n || out.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`dalle: cannot reshape ${shapeStr(from)} (${n} elements) to ${shapeStr(to)}`);
  }
  return out;
}

interface ReshapeAttrs {
  shape: number[];
}

export const reshapeOp = defineOp<ReshapeAttrs>({
  name: 'reshape',
  kernels: [],
  forward([x], { shape }) {
    const to = resolveShape(x.shape, shape);
    const src = x.isContiguous() ? x : x.copyContiguousRaw();
    const out = src.viewAs(to, contiguousStrides(to), src.offset);
    if (src !== x) src.dispose();
    return out;
  },
  backward(ctx, g) {
    return [reshape(g, ctx.inputs[0].shape)];
  },
  reference([x], { shape }) {
    return refTensor(resolveShape(x.shape, shape), x.data);
  },
  cases() {
    return [
      { inputs: [{ shape: [7, 33] }], attrs: { shape: [33, 7] } },
      { inputs: [{ shape: [3, 5, 7] }], attrs: { shape: [-1, 7] } },
      { inputs: [{ shape: [1] }], attrs: { shape: [] } },
    ];
  },
});

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  return applyOp(reshapeOp, [x], { shape: [...shape] });
}

// ---- permute -----------------------------------------------------------------------------------------------------

interface PermuteAttrs {
  dims: number[];
}

function checkPerm(rank: number, dims: readonly number[]): void {
  const seen = new Set(dims);
  if (dims.length !== rank || seen.size !== rank || dims.some((d) => d < 0 || d >= rank || !Number.isInteger(d))) {
    throw new Error(`dalle: permute: [${dims.join(', ')}] is not a permutation of ${rank} dimensions`);
  }
}

export function refPermute(x: RefTensor, dims: readonly number[]): RefTensor {
  const shape = dims.map((d) => x.shape[d]);
  const out = refTensor(shape);
  refForEach(shape, (flat, idx) => {
    const src = new Array<number>(dims.length);
    for (let i = 0; i < dims.length; i++) src[dims[i]] = idx[i];
    out.data[flat] = x.data[refOffset(x.shape, src)];
  });
  return out;
}

export const permuteOp = defineOp<PermuteAttrs>({
  name: 'permute',
  kernels: [],
  forward([x], { dims }) {
    checkPerm(x.rank, dims);
    return x.viewAs(
      dims.map((d) => x.shape[d]),
      dims.map((d) => x.strides[d]),
      x.offset,
    );
  },
  backward(ctx, g) {
    const inverse = new Array<number>(ctx.attrs.dims.length);
    ctx.attrs.dims.forEach((d, i) => (inverse[d] = i));
    return [permute(g, inverse)];
  },
  reference([x], { dims }) {
    return refPermute(x, dims);
  },
  cases() {
    return [
      { inputs: [{ shape: [7, 33] }], attrs: { dims: [1, 0] } },
      { inputs: [{ shape: [3, 5, 7, 2] }], attrs: { dims: [2, 0, 3, 1] } },
      { inputs: [{ shape: [1, 129] }], attrs: { dims: [1, 0] } },
    ];
  },
});

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  return applyOp(permuteOp, [x], { dims: dims.map((d) => (d < 0 ? d + x.rank : d)) });
}

/** Swaps two dimensions (negative indices count from the end). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const dims = x.shape.map((_, i) => i);
  const ia = a < 0 ? a + x.rank : a;
  const ib = b < 0 ? b + x.rank : b;
  [dims[ia], dims[ib]] = [dims[ib], dims[ia]];
  return permute(x, dims);
}

// ---- slice -------------------------------------------------------------------------------------------------------

interface SliceAttrs {
  /** Per dimension: [start, end) (end exclusive); missing trailing dimensions are taken whole. */
  ranges: Array<[number, number]>;
}

function normalizeRanges(shape: Shape, ranges: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  if (ranges.length > shape.length) throw new Error(`dalle: slice: ${ranges.length} ranges for shape ${shapeStr(shape)}`);
  return shape.map((d, i) => {
    const r = ranges[i];
    if (!r) return [0, d] as [number, number];
    const s = r[0] < 0 ? r[0] + d : r[0];
    const e = r[1] < 0 ? r[1] + d : Math.min(r[1], d);
    if (!Number.isInteger(s) || !Number.isInteger(e) || s < 0 || e < s || s > d) {
      throw new Error(`dalle: slice [${r[0]}, ${r[1]}) is out of bounds for dimension ${i} of ${shapeStr(shape)}`);
    }
    return [s, e] as [number, number];
  });
}

export const sliceOp = defineOp<SliceAttrs>({
  name: 'slice',
  kernels: [],
  forward([x], { ranges }) {
    const r = normalizeRanges(x.shape, ranges);
    let offset = x.offset;
    r.forEach(([s], i) => (offset += s * x.strides[i]));
    return x.viewAs(
      r.map(([s, e]) => e - s),
      x.strides,
      offset,
    );
  },
  backward(ctx, g) {
    const x = ctx.inputs[0];
    const r = normalizeRanges(x.shape, ctx.attrs.ranges);
    const dx = Tensor.zeros(x.shape, 'f32');
    let offset = 0;
    const strides = contiguousStrides(x.shape);
    r.forEach(([s], i) => (offset += s * strides[i]));
    const gc = g.isContiguous() ? g : g.copyContiguousRaw();
    activeBackend().stridedCopy(dx.address + offset * 4, gc.address, itemBytes('f32'), [...g.shape], strides, contiguousStrides(g.shape));
    if (gc !== g) gc.dispose();
    return [dx];
  },
  reference([x], { ranges }) {
    const r = normalizeRanges(x.shape, ranges);
    const shape = r.map(([s, e]) => e - s);
    const out = refTensor(shape);
    refForEach(shape, (flat, idx) => {
      out.data[flat] = x.data[refOffset(x.shape, idx.map((v, i) => v + r[i][0]))];
    });
    return out;
  },
  cases(): OpCase<SliceAttrs>[] {
    return [
      { inputs: [{ shape: [7, 33] }], attrs: { ranges: [[2, 5], [1, 32]] } },
      { inputs: [{ shape: [3, 5, 129] }], attrs: { ranges: [[0, 3], [4, 5]] } },
      { inputs: [{ shape: [9] }], attrs: { ranges: [[-4, 9]] } },
    ];
  },
});

/** x[r0[0]:r0[1], r1[0]:r1[1], ...]; negative indices count from the end. */
export function slice(x: Tensor, ranges: ReadonlyArray<readonly [number, number]>): Tensor {
  return applyOp(sliceOp, [x], { ranges: ranges.map(([s, e]) => [s, e] as [number, number]) });
}
