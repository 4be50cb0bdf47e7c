// Elementwise ops on native/cpu/elementwise.cc:
// - binary add, sub, mul, div with numpy broadcasting (backward: the gradient summed back to each input's shape with
//   sumToShape); the functional forms also take a plain number on either side;
// - unary exp, log, sigmoid, tanh, relu, gelu, neg, sqrt, square, and affine (alpha * x + beta: scale, addScalar).
// gelu is the tanh approximation used by GPT-2 and DALL-E: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Inputs may be strided views (the kernel reads strides, so no copy is made) and f16/bf16 (widened to f32 first);
// i32 is refused. Outputs and gradients are f32. relu's gradient at exactly 0 is 0.
import { activeBackend, opKernel } from '../backend/registry';
import { InputKind, InputSpec, OpCase, OpDef, applyOp, defineOp, BackwardContext } from '../tensor/op';
import { RefTensor, refBroadcastGet, refForEach, refTensor } from '../tensor/reference';
import { DType } from '../tensor/dtype';
import { Shape, Tensor, shapeStr } from '../tensor/tensor';
import { sumToShape } from './reduce';

// Op codes of native/cpu/elementwise.cc (keep in sync).
const U = { affine: 0, exp: 1, log: 2, sigmoid: 3, tanh: 4, relu: 5, gelu: 6, sqrt: 7, square: 8 } as const;
const B = { add: 0, sub: 1, mul: 2, div: 3, reluGrad: 4, sigmoidGrad: 5, tanhGrad: 6, geluGrad: 7 } as const;

type UnaryK = (code: number, out: number, x: number, shape: number[], strides: number[], alpha: number, beta: number) => void;
type UnaryFlatK = (code: number, n: number, out: number, x: number, alpha: number, beta: number) => void;
type BinaryK = (code: number, out: number, a: number, aStrides: number[], b: number, bStrides: number[], shape: number[]) => void;
type BinaryFlatK = (code: number, n: number, out: number, a: number, b: number) => void;

const unaryK = (): UnaryK => opKernel<UnaryK>('ewUnary');
const unaryFlatK = (): UnaryFlatK => opKernel<UnaryFlatK>('ewUnaryFlat');
const binaryK = (): BinaryK => opKernel<BinaryK>('ewBinary');
const binaryFlatK = (): BinaryFlatK => opKernel<BinaryFlatK>('ewBinaryFlat');

/** The kernels every elementwise op calls (the strided and the flat form of each; the backward of binary ops also
 *  sums broadcast gradients with the reduction kernel). */
const EW_KERNELS = ['ewUnary', 'ewUnaryFlat', 'ewBinary', 'ewBinaryFlat'] as const;
const BINARY_KERNELS = [...EW_KERNELS, 'reduce'] as const;

// ---- raw kernels (no autograd) -----------------------------------------------------------------------------------

/** Elements from which a view whose last dimension is strided is copied dense before the kernel runs. */
const GATHER_COPY_MIN = 1 << 14;

/** A view the kernel would read one element per cache line of: a strided last dimension (a permuted view, such as the
 *  dVAE's codebook-last logits). The strided copy moves it in cache tiles (native/cpu/copy.cc) far faster than the
 *  elementwise kernel gathers it: an add of a (16, 16, 16, 1024) permuted view took 7.9 ms, its copy and a dense add
 *  1.8 ms. */
function gathers(x: Tensor): boolean {
  const last = x.rank - 1;
  return x.size >= GATHER_COPY_MIN && last >= 0 && x.shape[last] > 1 && x.strides[last] !== 1 && !x.isContiguous();
}

/** x as f32 (x itself when it is and the kernel reads it well; a contiguous (widened) copy of f16/bf16 or of a view
 *  that gathers, to dispose); i32 is an error. */
function asF32(x: Tensor, op: string): Tensor {
  if (x.dtype === 'f32') return gathers(x) ? x.copyContiguousRaw() : x;
  if (x.dtype === 'i32') {
    throw new Error(`dalle: ${op} takes float tensors, got i32 ${shapeStr(x.shape)}; cast(x, 'f32') first`);
  }
  const src = x.isContiguous() ? x : x.copyContiguousRaw();
  const out = Tensor.empty(x.shape, 'f32');
  activeBackend().cast(out.address, 'f32', src.address, src.dtype, x.size);
  if (src !== x) src.dispose();
  return out;
}

/** numpy broadcasting of two shapes, with an error naming the op and both shapes. */
function broadcastShape(a: Shape, b: Shape, op = 'broadcast'): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(
        `dalle: ${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast ` +
          `(dimension ${i - rank} is ${da} vs ${db}; each must match or be 1)`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides (elements) that read t as if broadcast to outShape: 0 along broadcast dimensions. */
function broadcastStrides(t: Tensor, outShape: Shape): number[] {
  const off = outShape.length - t.rank;
  return outShape.map((_, d) => (d < off || t.shape[d - off] === 1 ? 0 : t.strides[d - off]));
}

function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** f(x) elementwise into a new contiguous f32 tensor. */
function unaryRaw(code: number, x: Tensor, op: string, alpha = 1, beta = 0): Tensor {
  const src = asF32(x, op);
  const out = Tensor.empty(x.shape, 'f32');
  if (out.size > 0) {
    if (src.isContiguous()) unaryFlatK()(code, out.size, out.address, src.address, alpha, beta);
    else unaryK()(code, out.address, src.address, [...src.shape], [...src.strides], alpha, beta);
  }
  if (src !== x) src.dispose();
  return out;
}

/** f(a, b) elementwise with broadcasting into a new contiguous f32 tensor. */
function binaryRaw(code: number, a: Tensor, b: Tensor, op: string): Tensor {
  const shape = broadcastShape(a.shape, b.shape, op);
  const a32 = asF32(a, op);
  const b32 = asF32(b, op);
  const out = Tensor.empty(shape, 'f32');
  if (out.size > 0) {
    if (sameShape(a.shape, b.shape) && a32.isContiguous() && b32.isContiguous()) {
      binaryFlatK()(code, out.size, out.address, a32.address, b32.address);
    } else {
      binaryK()(code, out.address, a32.address, broadcastStrides(a32, shape), b32.address, broadcastStrides(b32, shape), shape);
    }
  }
  if (a32 !== a) a32.dispose();
  if (b32 !== b) b32.dispose();
  return out;
}

/** Disposes t unless it is one of `keep` (for temporaries in backward passes). */
function drop(t: Tensor, ...keep: Tensor[]): void {
  if (!keep.includes(t)) t.dispose();
}

/** sumToShape(t, shape), disposing t when a new tensor came back. */
function reduceTo(t: Tensor, shape: Shape): Tensor {
  const r = sumToShape(t, shape);
  if (r !== t) t.dispose();
  return r;
}

// ---- binary ops ----------------------------------------------------------------------------------------------------

type NoAttrs = Record<string, never>;

function refBinary(a: RefTensor, b: RefTensor, f: (p: number, q: number) => number): RefTensor {
  const shape = broadcastShape(a.shape, b.shape);
  const out = refTensor(shape);
  refForEach(shape, (flat, idx) => {
    out.data[flat] = f(refBroadcastGet(a, shape, idx), refBroadcastGet(b, shape, idx));
  });
  return out;
}

function binaryCases(bKind: InputKind = 'normal'): OpCase<NoAttrs>[] {
  const c = (name: string, sa: number[], sb: number[], extra: Partial<OpCase<NoAttrs>> = {}): OpCase<NoAttrs> => ({
    name,
    inputs: [{ shape: sa }, { shape: sb, kind: bKind }],
    attrs: {},
    ...extra,
  });
  return [
    c('same 7x33', [7, 33], [7, 33]),
    c('one element', [1], [1]),
    c('row broadcast', [129, 33], [33]),
    c('column broadcast', [33, 1], [33, 129]),
    c('both broadcast', [7, 1, 33], [1, 5, 33]),
    c('scalar rhs', [65], []),
    c('scalar lhs', [], [3, 7]),
    c('middle axis', [3, 1, 5], [3, 7, 5]),
    c('large same', [4099], [4099]),
    c('large column', [3, 1031], [3, 1]),
    c('tiny full', [2, 3], [3], { gradcheck: 'full' }),
  ];
}

function defineBinary(
  name: string, code: number, f: (p: number, q: number) => number,
  backward: (ctx: BackwardContext<NoAttrs>, g: Tensor) => (Tensor | null)[], bKind: InputKind = 'normal',
): OpDef<NoAttrs> {
  return defineOp<NoAttrs>({
    name,
    kernels: BINARY_KERNELS,
    forward([a, b]) {
      return binaryRaw(code, a, b, name);
    },
    backward,
    reference([a, b]) {
      return refBinary(a, b, f);
    },
    cases() {
      return binaryCases(bKind);
    },
  });
}

export const addOp = defineBinary('add', B.add, (p, q) => p + q, (ctx, g) => {
  const [a, b] = ctx.inputs;
  return [a.requiresGrad ? sumToShape(g, a.shape) : null, b.requiresGrad ? sumToShape(g, b.shape) : null];
});

export const subOp = defineBinary('sub', B.sub, (p, q) => p - q, (ctx, g) => {
  const [a, b] = ctx.inputs;
  let gb: Tensor | null = null;
  if (b.requiresGrad) {
    const s = sumToShape(g, b.shape);
    gb = unaryRaw(U.affine, s, 'sub backward', -1, 0);
    drop(s, g);
  }
  return [a.requiresGrad ? sumToShape(g, a.shape) : null, gb];
});

export const mulOp = defineBinary('mul', B.mul, (p, q) => p * q, (ctx, g) => {
  const [a, b] = ctx.inputs;
  return [
    a.requiresGrad ? reduceTo(binaryRaw(B.mul, g, b, 'mul backward'), a.shape) : null,
    b.requiresGrad ? reduceTo(binaryRaw(B.mul, g, a, 'mul backward'), b.shape) : null,
  ];
});

// d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -(g/b) * out.
export const divOp = defineBinary('div', B.div, (p, q) => p / q, (ctx, g) => {
  const [a, b] = ctx.inputs;
  if (!a.requiresGrad && !b.requiresGrad) return [null, null];
  const gOverB = binaryRaw(B.div, g, b, 'div backward');
  let gb: Tensor | null = null;
  if (b.requiresGrad) {
    const s = reduceTo(binaryRaw(B.mul, gOverB, ctx.output, 'div backward'), b.shape);
    gb = unaryRaw(U.affine, s, 'div backward', -1, 0);
    s.dispose();
  }
  let ga: Tensor | null = null;
  if (a.requiresGrad) ga = reduceTo(gOverB, a.shape);
  else gOverB.dispose();
  return [ga, gb];
}, 'positive');

// ---- unary ops -----------------------------------------------------------------------------------------------------

function unaryCases(kind: InputKind): OpCase<NoAttrs>[] {
  const c = (shape: number[], extra: Partial<OpCase<NoAttrs>> = {}): OpCase<NoAttrs> => ({
    name: shapeStr(shape),
    inputs: [{ shape, kind } as InputSpec],
    attrs: {},
    ...extra,
  });
  return [c([1]), c([7, 33]), c([129]), c([3, 5, 67]), c([4099]), c([5], { name: 'tiny full', gradcheck: 'full' })];
}

function refUnary(x: RefTensor, f: (v: number) => number): RefTensor {
  return refTensor(x.shape, Array.from(x.data, f));
}

function defineUnary(
  name: string, code: number, f: (v: number) => number,
  backward: (ctx: BackwardContext<NoAttrs>, g: Tensor) => Tensor, kind: InputKind = 'normal', alpha = 1,
): OpDef<NoAttrs> {
  return defineOp<NoAttrs>({
    name,
    kernels: EW_KERNELS,
    forward([x]) {
      return unaryRaw(code, x, name, alpha, 0);
    },
    backward(ctx, g) {
      return [backward(ctx, g)];
    },
    reference([x]) {
      return refUnary(x, f);
    },
    cases() {
      return unaryCases(kind);
    },
  });
}

const GELU_C = Math.sqrt(2 / Math.PI);
const refGelu = (v: number): number => 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v)));
const refSigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

export const expOp = defineUnary('exp', U.exp, Math.exp, (ctx, g) => binaryRaw(B.mul, g, ctx.output, 'exp backward'));

export const logOp = defineUnary('log', U.log, Math.log, (ctx, g) => binaryRaw(B.div, g, ctx.inputs[0], 'log backward'), 'positive');

export const sigmoidOp = defineUnary('sigmoid', U.sigmoid, refSigmoid, (ctx, g) =>
  binaryRaw(B.sigmoidGrad, g, ctx.output, 'sigmoid backward'));

export const tanhOp = defineUnary('tanh', U.tanh, Math.tanh, (ctx, g) => binaryRaw(B.tanhGrad, g, ctx.output, 'tanh backward'));

export const reluOp = defineUnary('relu', U.relu, (v) => Math.max(v, 0), (ctx, g) =>
  binaryRaw(B.reluGrad, g, ctx.inputs[0], 'relu backward'));

export const geluOp = defineUnary('gelu', U.gelu, refGelu, (ctx, g) => binaryRaw(B.geluGrad, g, ctx.inputs[0], 'gelu backward'));

export const negOp = defineUnary('neg', U.affine, (v) => -v, (_ctx, g) => unaryRaw(U.affine, g, 'neg backward', -1, 0), 'normal', -1);

// sqrt's gradient: g / (2 sqrt(x)) = (g / y) * 0.5
export const sqrtOp = defineUnary('sqrt', U.sqrt, Math.sqrt, (ctx, g) => {
  const t = binaryRaw(B.div, g, ctx.output, 'sqrt backward');
  const out = unaryRaw(U.affine, t, 'sqrt backward', 0.5, 0);
  t.dispose();
  return out;
}, 'positive');

export const squareOp = defineUnary('square', U.square, (v) => v * v, (ctx, g) => {
  const t = binaryRaw(B.mul, g, ctx.inputs[0], 'square backward');
  const out = unaryRaw(U.affine, t, 'square backward', 2, 0);
  t.dispose();
  return out;
});

export interface AffineAttrs {
  alpha: number;
  beta: number;
}

/** y = alpha * x + beta (computed as a product then a sum, no fused multiply-add, on every ISA). */
export const affineOp = defineOp<AffineAttrs>({
  name: 'affine',
  kernels: EW_KERNELS,
  forward([x], { alpha, beta }) {
    return unaryRaw(U.affine, x, 'affine', alpha, beta);
  },
  backward(ctx, g) {
    return [unaryRaw(U.affine, g, 'affine backward', ctx.attrs.alpha, 0)];
  },
  reference([x], { alpha, beta }) {
    return refUnary(x, (v) => alpha * v + beta);
  },
  cases() {
    return [
      { name: 'scale', inputs: [{ shape: [7, 33] }], attrs: { alpha: 2.5, beta: 0 } },
      { name: 'shift', inputs: [{ shape: [129] }], attrs: { alpha: 1, beta: -0.75 } },
      { name: 'both', inputs: [{ shape: [4099] }], attrs: { alpha: -0.3, beta: 1.25 } },
      { name: 'one', inputs: [{ shape: [1] }], attrs: { alpha: 3, beta: 1 }, gradcheck: 'full' },
    ];
  },
});

// ---- functional API ----------------------------------------------------------------------------------------------

function needTensor(op: string, a: Tensor | number, b: Tensor | number): void {
  if (!(a instanceof Tensor) && !(b instanceof Tensor)) {
    throw new Error(`dalle: ${op} needs at least one Tensor operand, got two numbers (${a}, ${b})`);
  }
}

/** A one-element f32 tensor for a number operand that must broadcast (number - tensor, number / tensor), on the
 *  device of the tensor operand. */
function scalarTensor(v: number, like: Tensor): Tensor {
  return Tensor.scalar(v, 'f32', like.device);
}

/** a + b with broadcasting; either side may be a number. */
export function add(a: Tensor | number, b: Tensor | number): Tensor {
  needTensor('add', a, b);
  if (typeof b === 'number') return affine(a as Tensor, 1, b);
  if (typeof a === 'number') return affine(b, 1, a);
  return applyOp(addOp, [a, b], {});
}

/** a - b with broadcasting; either side may be a number. */
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  needTensor('sub', a, b);
  if (typeof b === 'number') return affine(a as Tensor, 1, -b);
  if (typeof a === 'number') return affine(b, -1, a);
  return applyOp(subOp, [a, b], {});
}

/** a * b with broadcasting; either side may be a number. */
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  needTensor('mul', a, b);
  if (typeof b === 'number') return affine(a as Tensor, b, 0);
  if (typeof a === 'number') return affine(b, a, 0);
  return applyOp(mulOp, [a, b], {});
}

/** a / b with broadcasting; either side may be a number (x / s is computed as x * (1/s)). */
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  needTensor('div', a, b);
  if (typeof b === 'number') return affine(a as Tensor, 1 / b, 0);
  if (typeof a === 'number') {
    const s = scalarTensor(a, b);
    const out = applyOp(divOp, [s, b], {});
    s.dispose(); // the tape keeps inputs by reference only to read their shape and flag (s needs no gradient)
    return out;
  }
  return applyOp(divOp, [a, b], {});
}

/** alpha * x + beta. */
export function affine(x: Tensor, alpha: number, beta = 0): Tensor {
  return applyOp(affineOp, [x], { alpha, beta });
}

/** s * x. */
export function scale(x: Tensor, s: number): Tensor {
  return affine(x, s, 0);
}

/** x + s. */
export function addScalar(x: Tensor, s: number): Tensor {
  return affine(x, 1, s);
}

export function neg(x: Tensor): Tensor {
  return applyOp(negOp, [x], {});
}

export function exp(x: Tensor): Tensor {
  return applyOp(expOp, [x], {});
}

export function log(x: Tensor): Tensor {
  return applyOp(logOp, [x], {});
}

export function sigmoid(x: Tensor): Tensor {
  return applyOp(sigmoidOp, [x], {});
}

export function tanh(x: Tensor): Tensor {
  return applyOp(tanhOp, [x], {});
}

export function relu(x: Tensor): Tensor {
  return applyOp(reluOp, [x], {});
}

/** GELU, tanh approximation (GPT-2 / DALL-E): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function gelu(x: Tensor): Tensor {
  return applyOp(geluOp, [x], {});
}

export function sqrt(x: Tensor): Tensor {
  return applyOp(sqrtOp, [x], {});
}

export function square(x: Tensor): Tensor {
  return applyOp(squareOp, [x], {});
}

/** Zeros with x's shape and device (and dtype unless given). */
export function zerosLike(x: Tensor, dtype: DType = x.dtype): Tensor {
  return Tensor.zeros(x.shape, dtype, x.device);
}

/** Ones with x's shape and device (and dtype unless given). */
export function onesLike(x: Tensor, dtype: DType = x.dtype): Tensor {
  return Tensor.ones(x.shape, dtype, x.device);
}
