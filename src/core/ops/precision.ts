// Ops of mixed-precision training (src/core/train/precision):
// - roundFloat(x, dtype): f32 values rounded to the nearest f16 (or bf16) value, kept in f32 (round to nearest even;
//   past f16's range, +-Inf, as a GPU's f32 -> f16 conversion). Its backward rounds the incoming gradient the same way
//   (straight-through: where the GPU holds an activation in 16 bits, it holds that activation's gradient in 16 bits).
//   This is how the CPU emulates fp16 training exactly: every value the GPU would hold in fp16 is rounded to fp16.
// - gradScaleEnter(x, scale): the identity forward; backward multiplies the gradient by `scale` (the gradient entering
//   a resblock from the fp32 residual stream is scaled up into fp16's range).
// - gradScaleLeave(x, scale, onNonFinite): the identity forward; backward divides the gradient by `scale` and sets
//   every non-finite value (Inf, NaN) to zero ("filters" it) before it joins the fp32 residual gradient, and reports
//   how many there were, so a resblock that overflowed neither poisons nor rescales the resblocks before it.
// - scaleFilterInPlace(t, alpha): t = alpha * t with non-finite values set to 0, returns their count (native
//   scaleFilter in native/cpu/blas1.cc; scaleFilterReference is its plain TypeScript twin).
// Forward of the two boundary ops is a view (a new tensor on the same storage): applyOp sets gradFn on the output,
// so returning the input itself would overwrite the input's tape entry.
import { activeBackend, inOpScope, opKernel } from '../backend/registry';
import { DType, roundTo } from '../tensor/dtype';
import { applyOp, defineOp } from '../tensor/op';
import { refTensor } from '../tensor/reference';
import { Tensor } from '../tensor/tensor';
import { scale } from './elementwise';

type ScaleFilterK = (n: number, x: number, y: number, alpha: number) => number;
const SCALE_FILTER_KERNELS = ['scaleFilter'] as const;
const scaleFilterK = (): ScaleFilterK => opKernel<ScaleFilterK>('scaleFilter');

/** alpha * x with non-finite products set to 0 (float32 arithmetic, as the kernel); returns the values and count. */
export function scaleFilterReference(x: ArrayLike<number>, alpha: number): { values: Float32Array; nonFinite: number } {
  const values = new Float32Array(x.length);
  const a = Math.fround(alpha);
  let nonFinite = 0;
  for (let i = 0; i < x.length; i++) {
    const v = Math.fround(x[i] * a);
    if (Number.isFinite(v)) values[i] = v;
    else nonFinite++;
  }
  return { values, nonFinite };
}

function checkF32(t: Tensor, what: string): void {
  if (t.dtype !== 'f32' || !t.isContiguous()) throw new Error(`dalle: ${what} needs a contiguous f32 tensor, got ${t}`);
}

/** t = alpha * t in place, non-finite values set to 0. Returns how many values were non-finite. */
export function scaleFilterInPlace(t: Tensor, alpha: number): number {
  checkF32(t, 'scaleFilterInPlace');
  return inOpScope('scaleFilterInPlace', t.backend, SCALE_FILTER_KERNELS, () => scaleFilterK()(t.size, t.address, t.address, alpha));
}

/** A new contiguous f32 tensor alpha * x, non-finite values set to 0, and their count. */
export function scaleFilter(x: Tensor, alpha: number): { out: Tensor; nonFinite: number } {
  return inOpScope('scaleFilter', x.backend, SCALE_FILTER_KERNELS, () => scaleFilterOn(x, alpha));
}

function scaleFilterOn(x: Tensor, alpha: number): { out: Tensor; nonFinite: number } {
  const src = x.dtype === 'f32' && x.isContiguous() ? x : toF32Contiguous(x);
  const out = Tensor.empty(x.shape, 'f32');
  const nonFinite = scaleFilterK()(x.size, src.address, out.address, alpha);
  if (src !== x) src.dispose();
  return { out, nonFinite };
}

function toF32Contiguous(x: Tensor): Tensor {
  const src = x.isContiguous() ? x : x.copyContiguousRaw();
  if (src.dtype === 'f32') return src;
  const out = Tensor.empty(x.shape, 'f32');
  activeBackend().cast(out.address, 'f32', src.address, src.dtype, x.size);
  if (src !== x) src.dispose();
  return out;
}

// ---- roundFloat --------------------------------------------------------------------------------------------------

export type RoundDType = 'f32' | 'f16' | 'bf16';

interface RoundAttrs {
  /** f32 is the identity (a copy): the harness's gradient check of the straight-through plumbing. */
  dtype: RoundDType;
}

/** f32 values rounded to `dtype` and widened back to f32 (no autograd). */
function roundRaw(x: Tensor, dtype: RoundDType): Tensor {
  const src = toF32Contiguous(x);
  if (dtype === 'f32') return src === x ? x.copyContiguousRaw() : src;
  const half = Tensor.empty(x.shape, dtype);
  activeBackend().cast(half.address, dtype, src.address, 'f32', x.size);
  const out = Tensor.empty(x.shape, 'f32');
  activeBackend().cast(out.address, 'f32', half.address, dtype, x.size);
  half.dispose();
  if (src !== x) src.dispose();
  return out;
}

export const roundFloatOp = defineOp<RoundAttrs>({
  name: 'roundFloat',
  kernels: [],
  forward([x], { dtype }) {
    return roundRaw(x, dtype);
  },
  backward(ctx, g) {
    // Straight-through, with the gradient held in the same 16-bit format as the activation.
    return [roundFloat(g, ctx.attrs.dtype)];
  },
  reference([x], { dtype }) {
    return refTensor(x.shape, Array.from(x.data, (v) => roundTo(dtype as DType, Math.fround(v))));
  },
  cases() {
    // Rounding to 16 bits is piecewise constant, so finite differences see zero: the gradient check runs on f32 (the
    // identity, same plumbing); the 16-bit straight-through backward (the gradient rounded the same way) and overflow
    // to Inf are checked in test/train/precision-ops.test.ts.
    const f32 = { name: 'f32 identity', inputs: [{ shape: [7, 33] }], attrs: { dtype: 'f32' as const } };
    return [f32, ...(['f16', 'bf16'] as const).flatMap((dtype) => [
      { name: dtype, inputs: [{ shape: [7, 33] }], attrs: { dtype }, gradcheck: 'none' as const, tol: { rtol: 0, atol: 0 } },
      { name: `${dtype} large`, inputs: [{ shape: [1025], kind: 'uniform' as const }], attrs: { dtype }, gradcheck: 'none' as const, tol: { rtol: 0, atol: 0 } },
      { name: `${dtype} one`, inputs: [{ shape: [1] }], attrs: { dtype }, gradcheck: 'none' as const, tol: { rtol: 0, atol: 0 } },
    ])];
  },
});

/** x rounded to the nearest f16 value (kept in f32); overflow gives +-Inf. Gradients are rounded the same way. */
export function roundF16(x: Tensor): Tensor {
  return applyOp(roundFloatOp, [x], { dtype: 'f16' });
}

/** x rounded to the nearest bf16 value (kept in f32). Gradients are rounded the same way. */
export function roundBF16(x: Tensor): Tensor {
  return applyOp(roundFloatOp, [x], { dtype: 'bf16' });
}

/** x rounded to `dtype` (f32: a copy), kept in f32; gradients rounded the same way. */
export function roundFloat(x: Tensor, dtype: RoundDType): Tensor {
  return applyOp(roundFloatOp, [x], { dtype });
}

// ---- resblock gradient boundaries -------------------------------------------------------------------------------

interface EnterAttrs {
  /** The resblock's gradient scale (read at forward time; scales change only between updates). */
  scale: number;
}

interface LeaveAttrs {
  scale: number;
  /** Told how many gradient values were non-finite (and zeroed) on the way out of the resblock; not called when 0. */
  onNonFinite?: (count: number) => void;
}

function identityView(x: Tensor): Tensor {
  return x.viewAs(x.shape, x.strides, x.offset);
}

export const gradScaleEnterOp = defineOp<EnterAttrs>({
  name: 'gradScaleEnter',
  kernels: [],
  forward([x]) {
    return identityView(x);
  },
  backward(ctx, g) {
    // f32 product; no filtering here: an overflow inside the resblock must stay visible to its fp16 rounding.
    return [scale(g, ctx.attrs.scale)];
  },
  reference([x]) {
    return refTensor(x.shape, x.data);
  },
  cases() {
    // The backward is the derivative of the forward only at scale 1 (the gradcheck); at other scales it is by design
    // scale * gradient (test/train/precision-ops.test.ts).
    return [
      { name: 'scale 1', inputs: [{ shape: [7, 33] }], attrs: { scale: 1 } },
      { name: 'scale 2^13', inputs: [{ shape: [3, 5, 7] }], attrs: { scale: 8192 }, gradcheck: 'none' as const },
    ];
  },
});

export const gradScaleLeaveOp = defineOp<LeaveAttrs>({
  name: 'gradScaleLeave',
  kernels: SCALE_FILTER_KERNELS,
  forward([x]) {
    return identityView(x);
  },
  backward(ctx, g) {
    const { out, nonFinite } = scaleFilter(g, 1 / ctx.attrs.scale);
    if (nonFinite > 0) ctx.attrs.onNonFinite?.(nonFinite);
    return [out];
  },
  reference([x]) {
    return refTensor(x.shape, x.data);
  },
  cases() {
    return [
      { name: 'scale 1', inputs: [{ shape: [7, 33] }], attrs: { scale: 1 } },
      { name: 'scale 2^13', inputs: [{ shape: [129] }], attrs: { scale: 8192 }, gradcheck: 'none' as const },
    ];
  },
});

/** Identity forward; backward multiplies the gradient by `scale` (where the gradient enters a resblock). */
export function gradScaleEnter(x: Tensor, scale: number): Tensor {
  return applyOp(gradScaleEnterOp, [x], { scale });
}

/**
 * Identity forward; backward divides the gradient by `scale`, zeroes non-finite values and reports their count
 * (where the gradient leaves a resblock for the fp32 residual stream).
 */
export function gradScaleLeave(x: Tensor, scale: number, onNonFinite?: (count: number) => void): Tensor {
  return applyOp(gradScaleLeaveOp, [x], { scale, onNonFinite });
}
