// Reductions: sum, mean and max over a list of axes (all axes when none are given), with keepDims, on
// native/cpu/reduce.cc. The kernel reduces the middle dimension of a contiguous (outer, R, inner) block. Axes that are
// adjacent in memory (size-1 dimensions in between do not count) collapse into one such pass; sum and mean over
// separated groups of axes run one pass per group, last group first. max over separated groups copies the input once
// with the reduced axes moved to the end (their row-major order kept), so each output has one argmax.
// Sums accumulate in float64 in a fixed order: the result does not depend on the thread count.
// max's gradient goes to the first maximal element (lowest row-major index over the reduced axes), as in PyTorch's
// max(dim); the other tied elements get zero. A NaN counts as the maximum.
// Inputs may be strided views or f16/bf16 (widened to f32); outputs and gradients are f32.
// sumToShape(g, shape) sums a broadcast gradient back to an input's shape (what binary ops' backward needs).
import { activeBackend, inOpScope, opKernel } from '../backend/registry';
import { InputSpec, OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refForEach, refTensor } from '../tensor/reference';
import { Shape, Tensor, contiguousStrides, numel, shapeStr } from '../tensor/tensor';

type ReduceKernel = (
  code: number, x: number, outer: number, R: number, inner: number, out: number, idx: number | null, scale: number,
) => void;
type MaxBackwardKernel = (dx: number, g: number, idx: number, outer: number, R: number, inner: number) => void;
type EwUnaryKernel = (
  code: number, out: number, x: number, shape: number[], strides: number[], alpha: number, beta: number,
) => void;

/** Kernels of the sum reduction (callable outside ops: reduceSumRaw, sumToShape, argmax run on their input's device). */
const REDUCE_KERNELS = ['reduce'] as const;
const SUM = 0;
const MAX = 1;
const EW_AFFINE = 0; // native/cpu/elementwise.cc: y = alpha * x + beta

const reduceKernel = (): ReduceKernel => opKernel<ReduceKernel>('reduce');
const maxBackwardKernel = (): MaxBackwardKernel => opKernel<MaxBackwardKernel>('reduceMaxBackward');
const ewUnaryKernel = (): EwUnaryKernel => opKernel<EwUnaryKernel>('ewUnary');

export interface ReduceAttrs {
  /** Axes to reduce (negative ones count from the end), or null for all. */
  axes: number[] | null;
  keepDims: boolean;
}

/** Sorted, distinct, non-negative axes; null means every axis. */
function normalizeAxes(rank: number, axes: readonly number[] | null, op: string): number[] {
  if (axes === null) return Array.from({ length: rank }, (_, i) => i);
  const out = axes.map((a) => {
    if (!Number.isInteger(a) || a < -rank || a >= rank) {
      throw new Error(`dalle: ${op}: axis ${a} is out of range for a rank-${rank} tensor`);
    }
    return a < 0 ? a + rank : a;
  });
  if (new Set(out).size !== out.length) throw new Error(`dalle: ${op}: repeated axis in [${axes.join(', ')}]`);
  return out.sort((p, q) => p - q);
}

function reducedShape(shape: Shape, axes: readonly number[], keepDims: boolean): number[] {
  const set = new Set(axes);
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!set.has(i)) out.push(d);
    else if (keepDims) out.push(1);
  });
  return out;
}

/** Groups of reduced axes that are adjacent once size-1 dimensions are ignored: [first, last] per group. */
function reducedRuns(shape: Shape, axes: readonly number[]): Array<[number, number]> {
  const set = new Set(axes);
  const runs: Array<[number, number]> = [];
  let open: [number, number] | null = null;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    if (set.has(d)) {
      if (open) open[1] = d;
      else runs.push((open = [d, d]));
    } else {
      open = null;
    }
  }
  return runs;
}

function prod(shape: Shape, from: number, to: number): number {
  let p = 1;
  for (let i = from; i < to; i++) p *= shape[i];
  return p;
}

/** A contiguous f32 tensor with x's values (x itself when it already is one): the caller disposes it if !== x. */
function contiguousF32(x: Tensor, op: string): Tensor {
  if (x.dtype === 'i32') {
    throw new Error(`dalle: ${op} takes a float tensor, got i32 ${shapeStr(x.shape)}; cast(x, 'f32') first`);
  }
  if (x.dtype === 'f32') return x.isContiguous() ? x : x.copyContiguousRaw();
  const src = x.isContiguous() ? x : x.copyContiguousRaw();
  const out = Tensor.empty(x.shape, 'f32');
  activeBackend().cast(out.address, 'f32', src.address, src.dtype, x.size);
  if (src !== x) src.dispose();
  return out;
}

/**
 * scale * (sum of x over `axes`), no autograd: a new contiguous f32 tensor. One native pass per group of adjacent
 * reduced axes, the last group first.
 */
export function reduceSumRaw(x: Tensor, axesIn: readonly number[] | null, keepDims: boolean, scale = 1, op = 'sum'): Tensor {
  return inOpScope(op, x.backend, REDUCE_KERNELS, () => reduceSumOn(x, axesIn, keepDims, scale, op));
}

/** reduceSumRaw on the active backend. */
function reduceSumOn(x: Tensor, axesIn: readonly number[] | null, keepDims: boolean, scale: number, op: string): Tensor {
  const axes = normalizeAxes(x.rank, axesIn, op);
  const outShape = reducedShape(x.shape, axes, keepDims);
  const src = contiguousF32(x, op);
  const runs = reducedRuns(x.shape, axes);
  let cur = src;
  let curShape = [...x.shape];
  if (runs.length === 0 || x.size === 0) {
    // Only size-1 axes reduced: a scaled copy (R = 1). An empty input: an empty output, or sums over an axis of
    // length 0 (R = 0): zeros, NaN for a mean.
    const out = Tensor.empty(outShape, 'f32');
    if (out.size > 0) reduceKernel()(SUM, src.address, out.size, x.size === 0 ? 0 : 1, 1, out.address, null, scale);
    if (src !== x) src.dispose();
    return out;
  }
  for (let k = runs.length - 1; k >= 0; k--) {
    const [first, last] = runs[k];
    const outer = prod(curShape, 0, first);
    const R = prod(curShape, first, last + 1);
    const inner = prod(curShape, last + 1, curShape.length);
    const nextShape = curShape.map((d, i) => (i >= first && i <= last ? 1 : d));
    const next = Tensor.empty(nextShape, 'f32');
    reduceKernel()(SUM, cur.address, outer, R, inner, next.address, null, k === 0 ? scale : 1);
    if (cur !== src) cur.dispose();
    cur = next;
    curShape = nextShape;
  }
  if (src !== x) src.dispose();
  const out = cur.viewAs(outShape, contiguousStrides(outShape), cur.offset);
  cur.dispose();
  return out;
}

/**
 * Sums a gradient g of a broadcast result back to `shape` (leading dimensions summed away, dimensions where `shape`
 * has 1 summed with the 1 kept). Returns g itself when the shapes already match; otherwise a new f32 tensor.
 */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  const lead = g.rank - shape.length;
  const bad = (): Error => new Error(`dalle: sumToShape: ${shapeStr(g.shape)} does not broadcast from ${shapeStr(shape)}`);
  if (lead < 0) throw bad();
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    if (d < lead) axes.push(d);
    else if (shape[d - lead] !== g.shape[d]) {
      if (shape[d - lead] !== 1) throw bad();
      axes.push(d);
    }
  }
  if (axes.length === 0 && lead === 0) return g;
  const r = reduceSumRaw(g, axes, true, 1, 'sumToShape');
  const out = r.viewAs(shape, contiguousStrides(shape), r.offset);
  r.dispose();
  return out;
}

/** g (shaped like the reduction's output) spread over x's shape, times alpha, as a new contiguous f32 tensor. */
function spreadGradient(g: Tensor, xShape: Shape, axes: readonly number[], keepDims: boolean, alpha: number): Tensor {
  const gs = g.dtype === 'f32' ? g : contiguousF32(g, 'reduce backward');
  const set = new Set(axes);
  const strides: number[] = [];
  let j = 0;
  for (let d = 0; d < xShape.length; d++) {
    if (set.has(d)) {
      strides.push(0);
      if (keepDims) j++;
    } else {
      strides.push(gs.strides[j++]);
    }
  }
  const out = Tensor.empty(xShape, 'f32');
  if (out.size > 0) ewUnaryKernel()(EW_AFFINE, out.address, gs.address, [...xShape], strides, alpha, 0);
  if (gs !== g) gs.dispose();
  return out;
}

// ---- references -----------------------------------------------------------------------------------------------------

function refReduce(x: RefTensor, attrs: ReduceAttrs, op: 'sum' | 'mean' | 'max'): RefTensor {
  const axes = normalizeAxes(x.shape.length, attrs.axes, op);
  const set = new Set(axes);
  const keptShape = reducedShape(x.shape, axes, true);
  const out = refTensor(reducedShape(x.shape, axes, attrs.keepDims));
  const keptStrides = contiguousStrides(keptShape);
  if (op === 'max') out.data.fill(-Infinity);
  refForEach(x.shape, (flat, idx) => {
    let o = 0;
    for (let d = 0; d < idx.length; d++) if (!set.has(d)) o += idx[d] * keptStrides[d];
    const v = x.data[flat];
    if (op === 'max') {
      if (v > out.data[o] || Number.isNaN(v)) out.data[o] = Number.isNaN(out.data[o]) ? out.data[o] : v;
    } else {
      out.data[o] += v;
    }
  });
  if (op === 'mean') {
    const count = numel(axes.map((a) => x.shape[a]));
    for (let i = 0; i < out.data.length; i++) out.data[i] /= count;
  }
  return out;
}

function reduceCases(op: 'sum' | 'mean' | 'max'): OpCase<ReduceAttrs>[] {
  // max: finite differences go wrong where the two largest of a group are within ~1e-4 of each other (the perturbation
  // swaps them), which normal inputs make likely enough to flake. Integer-valued f32 inputs spread over +-2^23 keep every
  // gap >= 1 and make a tie at the top rare (about R / 2^24 per group): the directional max checks with several groups
  // use those. Differences of values that large are noisy (~1e-9 / eps per term), which only several outputs' worth of
  // tolerance absorbs: the one-output cases and the element-wise ('full') check keep normal inputs (one tie-prone gap
  // per case).
  const spread: InputSpec = { shape: [], kind: 'int', low: -(2 ** 23), high: 2 ** 23, dtype: 'f32' };
  const c = (shape: number[], axes: number[] | null, keepDims: boolean, extra: Partial<OpCase<ReduceAttrs>> = {}) => ({
    name: `${shapeStr(shape)} axes ${axes ? `[${axes.join(',')}]` : 'all'}${keepDims ? ' keepDims' : ''}`,
    inputs: [
      op === 'max' && (extra.gradcheck ?? 'directional') === 'directional' &&
      numel(reducedShape(shape, normalizeAxes(shape.length, axes, op), false)) >= 4
        ? { ...spread, shape }
        : { shape },
    ],
    attrs: { axes, keepDims },
    ...extra,
  });
  const large = op === 'max' ? { gradcheck: 'none' as const } : {};
  return [
    c([1], null, false),
    c([7, 33], [1], false),
    c([7, 33], [0], true),
    c([129], null, false),
    c([3, 5, 7], [0, 2], false),
    c([3, 5, 7], [-1], true),
    c([2, 3, 4, 5], [1, 2], true),
    c([5, 1, 7, 1, 3], [0, 2], false), // adjacent once the size-1 dimension between them is ignored
    c([2, 3, 4], [0, 1, 2], true),
    c([4, 5], [], false),
    c([3, 4], [0], false, { name: 'tiny full', gradcheck: 'full' }),
    // Large: many rows in parallel, the split-R path (few outputs, long rows: one row, and a middle axis), a column sum.
    // max's backward on large inputs is checked in test/tensor/elementwise.test.ts (long rows tie too often here).
    c([129, 1031], [1], false, large),
    c([2, 22001, 3], [1], false, large),
    c([70001], null, false, large),
    c([1031, 33], [0], false, large),
    ...(op === 'max' ? [c([7, 33], [1], false, { name: 'normal values, forward', gradcheck: 'none' })] : []),
  ];
}

// ---- sum / mean ----------------------------------------------------------------------------------------------------

function countOf(shape: Shape, attrs: ReduceAttrs, op: string): number {
  return numel(normalizeAxes(shape.length, attrs.axes, op).map((a) => shape[a]));
}

export const sumOp = defineOp<ReduceAttrs>({
  name: 'sum',
  kernels: ['reduce', 'ewUnary'],
  forward([x], attrs) {
    return reduceSumRaw(x, attrs.axes, attrs.keepDims, 1, 'sum');
  },
  backward(ctx, g) {
    const x = ctx.inputs[0];
    return [spreadGradient(g, x.shape, normalizeAxes(x.rank, ctx.attrs.axes, 'sum'), ctx.attrs.keepDims, 1)];
  },
  reference([x], attrs) {
    return refReduce(x, attrs, 'sum');
  },
  cases() {
    return reduceCases('sum');
  },
});

export const meanOp = defineOp<ReduceAttrs>({
  name: 'mean',
  kernels: ['reduce', 'ewUnary'],
  forward([x], attrs) {
    return reduceSumRaw(x, attrs.axes, attrs.keepDims, 1 / countOf(x.shape, attrs, 'mean'), 'mean');
  },
  backward(ctx, g) {
    const x = ctx.inputs[0];
    const axes = normalizeAxes(x.rank, ctx.attrs.axes, 'mean');
    return [spreadGradient(g, x.shape, axes, ctx.attrs.keepDims, 1 / countOf(x.shape, ctx.attrs, 'mean'))];
  },
  reference([x], attrs) {
    return refReduce(x, attrs, 'mean');
  },
  cases() {
    return reduceCases('mean');
  },
});

// ---- max -------------------------------------------------------------------------------------------------------------

/** How max maps x onto (outer, R, inner): directly, or after moving the reduced axes to the end (perm). */
interface MaxPlan {
  perm: number[] | null;
  outer: number;
  R: number;
  inner: number;
}

function planMax(shape: Shape, axes: readonly number[]): MaxPlan {
  const runs = reducedRuns(shape, axes);
  const n = numel(shape);
  if (runs.length === 0) return { perm: null, outer: n, R: 1, inner: 1 };
  if (runs.length === 1) {
    const [first, last] = runs[0];
    return { perm: null, outer: prod(shape, 0, first), R: prod(shape, first, last + 1), inner: prod(shape, last + 1, shape.length) };
  }
  const set = new Set(axes);
  const kept = shape.map((_, i) => i).filter((i) => !set.has(i));
  const R = numel(axes.map((a) => shape[a]));
  return { perm: [...kept, ...axes], outer: R === 0 ? 0 : n / R, R, inner: 1 };
}

export const maxOp = defineOp<ReduceAttrs>({
  name: 'max',
  kernels: ['reduce', 'reduceMaxBackward'],
  forward([x], attrs, ctx) {
    const axes = normalizeAxes(x.rank, attrs.axes, 'max');
    const outShape = reducedShape(x.shape, axes, attrs.keepDims);
    const plan = planMax(x.shape, axes);
    if (plan.R === 0 && plan.outer * plan.inner > 0) {
      throw new Error(`dalle: max over an empty axis of ${shapeStr(x.shape)} (axes [${axes.join(', ')}])`);
    }
    const x32 = contiguousF32(x, 'max');
    let src = x32;
    if (plan.perm) {
      const p = plan.perm;
      const view = x32.viewAs(p.map((d) => x32.shape[d]), p.map((d) => x32.strides[d]), x32.offset);
      src = view.copyContiguousRaw();
      view.dispose();
    }
    const out = Tensor.empty(outShape, 'f32');
    // The argmax is kept only when a backward can follow (an input that requires gradients).
    const idx = x.requiresGrad ? Tensor.empty(outShape, 'i32') : null;
    if (out.size > 0) reduceKernel()(MAX, src.address, plan.outer, plan.R, plan.inner, out.address, idx ? idx.address : null, 1);
    if (src !== x32) src.dispose();
    if (x32 !== x) x32.dispose();
    if (idx) ctx.save('argmax', idx);
    return out;
  },
  backward(ctx, gIn) {
    const x = ctx.inputs[0];
    const plan = planMax(x.shape, normalizeAxes(x.rank, ctx.attrs.axes, 'max'));
    const idx = ctx.saved('argmax');
    const g = contiguousF32(gIn, 'max backward');
    const p = plan.perm;
    const dxShape = p ? p.map((d) => x.shape[d]) : [...x.shape];
    const dx = Tensor.zeros(dxShape, 'f32');
    if (g.size > 0) maxBackwardKernel()(dx.address, g.address, idx.address, plan.outer, plan.R, plan.inner);
    if (g !== gIn) g.dispose();
    if (!p) return [dx];
    // dx holds the gradient in the permuted layout: view it back in x's order and copy.
    const inverse = new Array<number>(p.length);
    p.forEach((d, i) => (inverse[d] = i));
    const view = dx.viewAs(inverse.map((i) => dxShape[i]), inverse.map((i) => dx.strides[i]), 0);
    const out = view.copyContiguousRaw();
    view.dispose();
    dx.dispose();
    return [out];
  },
  reference([x], attrs) {
    return refReduce(x, attrs, 'max');
  },
  cases() {
    return reduceCases('max');
  },
});

// ---- functional API ----------------------------------------------------------------------------------------------------

function axesAttr(axes: number | readonly number[] | null | undefined): number[] | null {
  if (axes === undefined || axes === null) return null;
  return typeof axes === 'number' ? [axes] : [...axes];
}

/** Sum over `axes` (a number, a list, or all axes when omitted); keepDims keeps reduced axes as size 1. */
export function sum(x: Tensor, axes?: number | readonly number[] | null, keepDims = false): Tensor {
  return applyOp(sumOp, [x], { axes: axesAttr(axes), keepDims });
}

/** Mean over `axes` (all when omitted). */
export function mean(x: Tensor, axes?: number | readonly number[] | null, keepDims = false): Tensor {
  return applyOp(meanOp, [x], { axes: axesAttr(axes), keepDims });
}

/**
 * Index of the first maximum along `axis` (no gradient), int32 with that axis removed: the native max reduction's
 * argmax, one pass over x in place with the axis strided (no transpose), threaded.
 */
export function argmax(x: Tensor, axis: number): Tensor {
  return inOpScope('argmax', x.backend, REDUCE_KERNELS, () => argmaxOn(x, axis));
}

function argmaxOn(x: Tensor, axis: number): Tensor {
  const [a] = normalizeAxes(x.rank, [axis], 'argmax');
  if (x.shape[a] === 0) throw new Error(`dalle: argmax over an empty axis of ${shapeStr(x.shape)}`);
  const x32 = contiguousF32(x, 'argmax');
  const outShape = x.shape.filter((_, i) => i !== a);
  const values = Tensor.empty(outShape, 'f32');
  const idx = Tensor.empty(outShape, 'i32');
  if (idx.size > 0) reduceKernel()(MAX, x32.address, prod(x.shape, 0, a), x.shape[a], prod(x.shape, a + 1, x.rank), values.address, idx.address, 1);
  values.dispose();
  if (x32 !== x) x32.dispose();
  return idx;
}

/** Maximum over `axes` (all when omitted); the gradient goes to the first maximal element. */
export function max(x: Tensor, axes?: number | readonly number[] | null, keepDims = false): Tensor {
  return applyOp(maxOp, [x], { axes: axesAttr(axes), keepDims });
}
