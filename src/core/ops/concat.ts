// concat: N tensors joined along one axis (every other dimension equal, one dtype, any dtype). Each input is copied
// into its slab of the output by the native strided copy (native/cpu/copy.cc), which reads strided views directly and
// runs in parallel over rows. Backward: each input's gradient is its slice of the output gradient (a view; the tape
// copies non-contiguous ones).
import { activeBackend, opKernel } from '../backend/registry';
import { itemBytes } from '../tensor/dtype';
import { OpCase, applyOp, defineOp } from '../tensor/op';
import { RefTensor, refForEach, refOffset, refTensor } from '../tensor/reference';
import { Shape, Tensor, contiguousStrides, shapeStr } from '../tensor/tensor';

export interface ConcatAttrs {
  axis: number;
}

/** The output shape and the normalized axis; throws naming every shape when they do not fit together. */
function concatShape(shapes: readonly Shape[], axisIn: number): { shape: number[]; axis: number } {
  if (shapes.length === 0) throw new Error('dalle: concat needs at least one tensor');
  const rank = shapes[0].length;
  const list = (): string => shapes.map(shapeStr).join(', ');
  if (rank === 0) throw new Error(`dalle: concat cannot join rank-0 tensors (${list()}); reshape them to (1) first`);
  if (!Number.isInteger(axisIn) || axisIn < -rank || axisIn >= rank) {
    throw new Error(`dalle: concat: axis ${axisIn} is out of range for rank-${rank} tensors`);
  }
  const axis = axisIn < 0 ? axisIn + rank : axisIn;
  const shape = [...shapes[0]];
  shape[axis] = 0;
  for (const s of shapes) {
    if (s.length !== rank || s.some((d, i) => i !== axis && d !== shapes[0][i])) {
      throw new Error(`dalle: concat along axis ${axis}: shapes ${list()} differ outside that axis`);
    }
    shape[axis] += s[axis];
  }
  return { shape, axis };
}

export const concatOp = defineOp<ConcatAttrs>({
  name: 'concat',
  kernels: [],
  forward(inputs, attrs) {
    const { shape, axis } = concatShape(inputs.map((t) => t.shape), attrs.axis);
    const dtype = inputs[0].dtype;
    if (inputs.some((t) => t.dtype !== dtype)) {
      throw new Error(`dalle: concat: dtypes differ (${inputs.map((t) => t.dtype).join(', ')}); cast them to one first`);
    }
    const out = Tensor.empty(shape, dtype);
    const bytes = itemBytes(dtype);
    const outStrides = contiguousStrides(shape);
    let at = 0;
    for (const t of inputs) {
      if (t.size > 0) {
        activeBackend().stridedCopy(out.address + at * outStrides[axis] * bytes, t.address, bytes, [...t.shape], outStrides, [...t.strides]);
      }
      at += t.shape[axis];
    }
    return out;
  },
  backward(ctx, g) {
    const axis = concatShape(ctx.inputs.map((t) => t.shape), ctx.attrs.axis).axis;
    let at = 0;
    return ctx.inputs.map((t) => {
      const start = at;
      at += t.shape[axis];
      return t.requiresGrad ? g.viewAs(t.shape, g.strides, g.offset + start * g.strides[axis]) : null;
    });
  },
  reference(inputs, { axis: axisIn }) {
    const { shape, axis } = concatShape(inputs.map((t) => t.shape), axisIn);
    const out = refTensor(shape);
    // Which input each position along the axis comes from, and where in it.
    const owner: Array<[RefTensor, number]> = [];
    for (const t of inputs) for (let i = 0; i < t.shape[axis]; i++) owner.push([t, i]);
    refForEach(shape, (flat, idx) => {
      const [t, i] = owner[idx[axis]];
      const src = [...idx];
      src[axis] = i;
      out.data[flat] = t.data[refOffset(t.shape, src)];
    });
    return out;
  },
  cases(): OpCase<ConcatAttrs>[] {
    return [
      { name: 'two along columns', inputs: [{ shape: [7, 33] }, { shape: [7, 5] }], attrs: { axis: 1 } },
      { name: 'three along rows', inputs: [{ shape: [1, 4] }, { shape: [7, 4] }, { shape: [33, 4] }], attrs: { axis: 0 } },
      { name: 'middle axis, negative', inputs: [{ shape: [2, 3, 129] }, { shape: [2, 1, 129] }], attrs: { axis: -2 } },
      { name: 'one input', inputs: [{ shape: [5, 7] }], attrs: { axis: 1 } },
      { name: 'last axis of 1s', inputs: [{ shape: [129, 1] }, { shape: [129, 1] }, { shape: [129, 2] }], attrs: { axis: -1 } },
      { name: 'large', inputs: [{ shape: [1031, 3] }, { shape: [1031, 5] }], attrs: { axis: 1 } },
      { name: 'tiny full', inputs: [{ shape: [2, 2] }, { shape: [2, 1] }], attrs: { axis: 1 }, gradcheck: 'full' },
      {
        name: 'i32',
        inputs: [{ shape: [3, 7], kind: 'int', low: -50, high: 50 }, { shape: [2, 7], kind: 'int', low: -50, high: 50 }],
        attrs: { axis: 0 },
        gradcheck: 'none',
      },
    ];
  },
});

/** Joins tensors along `axis` (negative counts from the end). */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  return applyOp(concatOp, tensors, { axis });
}
