// Casts between f32, f16, bf16 and i32 (f32 -> 16-bit rounds to nearest even; float -> i32 truncates toward zero).
import { activeBackend, opKernel } from '../backend/registry';
import { DType, roundTo } from '../tensor/dtype';
import { applyOp, defineOp } from '../tensor/op';
import { refTensor } from '../tensor/reference';
import { Tensor } from '../tensor/tensor';
import { contiguous } from './view';

interface CastAttrs {
  to: DType;
}

export const castOp = defineOp<CastAttrs>({
  name: 'cast',
  kernels: [],
  forward([x], { to }) {
    const src = contiguous(x);
    const out = Tensor.empty(x.shape, to);
    activeBackend().cast(out.address, to, src.address, src.dtype, x.size);
    if (src !== x) src.dispose();
    return out;
  },
  backward(ctx, g) {
    // The gradient of a float cast is the identity, delivered in f32 (gradients are kept in f32).
    if (ctx.inputs[0].dtype === 'i32') return [null];
    return [g];
  },
  reference([x], { to }) {
    return refTensor(x.shape, Array.from(x.data, (v) => roundTo(to, v)));
  },
  cases() {
    const dtypes: DType[] = ['f32', 'f16', 'bf16'];
    const cases = [];
    for (const from of dtypes) {
      for (const to of dtypes) {
        // Rounding to 16 bits is piecewise constant, so finite differences see zero; its gradient is the identity by
        // definition (straight-through), checked in test/tensor/autograd.test.ts. Casts to f32 are checked here.
        cases.push({
          name: `${from}->${to}`,
          inputs: [{ shape: [7, 33], dtype: from }],
          attrs: { to },
          gradcheck: to === 'f32' ? ('directional' as const) : ('none' as const),
        });
      }
    }
    cases.push({ name: 'f32->i32', inputs: [{ shape: [129], dtype: 'f32' as DType, kind: 'uniform' as const, grad: false }], attrs: { to: 'i32' as DType }, gradcheck: 'none' as const });
    cases.push({ name: 'i32->f32', inputs: [{ shape: [33], dtype: 'i32' as DType, kind: 'int' as const, low: -1000, high: 1000 }], attrs: { to: 'f32' as DType }, gradcheck: 'none' as const });
    cases.push({ name: 'f32->f16 large', inputs: [{ shape: [1025], dtype: 'f32' as DType }], attrs: { to: 'f16' as DType }, gradcheck: 'none' as const });
    return cases;
  },
});

export function cast(x: Tensor, to: DType): Tensor {
  if (x.dtype === to) return x;
  return applyOp(castOp, [x], { to });
}
