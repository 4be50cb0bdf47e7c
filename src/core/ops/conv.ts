// The dVAE's image ops on NCHW float32: conv2d (stride 1, same padding, odd square kernel; weights (Cout, Cin, k, k)
// as in OpenAI's released dVAE), reluConv2d (conv2d of ReLU(x), fused), 2x2 max-pool and nearest 2x upsampling.
// Kernels: native/cpu/conv.cc, pool.cc.
// Keys: B = batch, C = channels (Cin, Cout), H, W = height and width, k = kernel size.
import { activeBackend, backendFor, opKernel } from '../backend/registry';
import { OpCase, applyOp, defineOp, opMissingKernels } from '../tensor/op';
import { RefTensor, refTensor } from '../tensor/reference';
import { Tensor, shapeStr } from '../tensor/tensor';
import { relu } from './elementwise';
import { contiguous } from './view';

type ConvForward = (x: number, w: number, bias: number | null, y: number, B: number, Cin: number, Cout: number,
  H: number, W: number, k: number) => void;
type ConvBackward = (x: number, w: number, dy: number, dx: number | null, dw: number | null, db: number | null,
  B: number, Cin: number, Cout: number, H: number, W: number, k: number) => void;
type PoolForward = (x: number, y: number, argmax: number, B: number, C: number, H: number, W: number) => void;
type PoolBackward = (dy: number, argmax: number, dx: number, B: number, C: number, H: number, W: number) => void;
type UpForward = (x: number, y: number, B: number, C: number, H: number, W: number) => void;
type UpBackward = (dy: number, dx: number, B: number, C: number, H: number, W: number) => void;

function requireF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== 'f32') throw new Error(`dalle: ${op} takes f32 tensors, got ${t}`);
}

/** Runs fn on contiguous versions of the tensors and disposes the copies it made. */
function withContiguous<T>(ts: readonly Tensor[], fn: (cs: Tensor[]) => T): T {
  const cs = ts.map((t) => contiguous(t));
  try {
    return fn(cs);
  } finally {
    cs.forEach((c, i) => c !== ts[i] && c.dispose());
  }
}

// ---- conv2d ------------------------------------------------------------------------------------------------------

function convDims(x: readonly number[], w: readonly number[], bias?: readonly number[]) {
  if (x.length !== 4 || w.length !== 4) {
    throw new Error(`dalle: conv2d: x must be (B, Cin, H, W) and w (Cout, Cin, k, k), got ${shapeStr(x)} and ${shapeStr(w)}`);
  }
  const [B, Cin, H, W] = x;
  const [Cout, wCin, kh, kw] = w;
  if (wCin !== Cin || kh !== kw || kh % 2 !== 1) {
    throw new Error(`dalle: conv2d: weight ${shapeStr(w)} does not fit input ${shapeStr(x)} (need (Cout, ${Cin}, k, k), k odd)`);
  }
  if (bias && (bias.length !== 1 || bias[0] !== Cout)) {
    throw new Error(`dalle: conv2d: bias ${shapeStr(bias)} must be (${Cout})`);
  }
  return { B, Cin, Cout, H, W, k: kh };
}

function refConv2d(x: RefTensor, w: RefTensor, bias?: RefTensor): RefTensor {
  const { B, Cin, Cout, H, W, k } = convDims(x.shape, w.shape, bias?.shape);
  const r = (k - 1) / 2;
  const y = refTensor([B, Cout, H, W]);
  for (let b = 0; b < B; b++) {
    for (let co = 0; co < Cout; co++) {
      for (let i = 0; i < H; i++) {
        for (let j = 0; j < W; j++) {
          let s = bias ? bias.data[co] : 0;
          for (let ci = 0; ci < Cin; ci++) {
            for (let di = 0; di < k; di++) {
              const ii = i + di - r;
              if (ii < 0 || ii >= H) continue;
              for (let dj = 0; dj < k; dj++) {
                const jj = j + dj - r;
                if (jj < 0 || jj >= W) continue;
                s += x.data[((b * Cin + ci) * H + ii) * W + jj] * w.data[((co * Cin + ci) * k + di) * k + dj];
              }
            }
          }
          y.data[((b * Cout + co) * H + i) * W + j] = s;
        }
      }
    }
  }
  return y;
}

/**
 * conv2d and reluConv2d: one definition, two kernel pairs. reluConv2d convolves ReLU(x) without making the ReLU tensor
 * (the kernels apply it while padding the input, and gate dx by x > 0 as they store it): the dVAE's res-path
 * convolutions all follow a ReLU. It is a separate op with its own kernel names, so a backend without them (the CUDA
 * one) reports them missing instead of running the plain kernels on the wrong input; reluThenConv2d picks.
 */
function defineConv2d(name: 'conv2d' | 'reluConv2d', forwardKernel: string, backwardKernel: string, inputRelu: boolean) {
  return defineOp<Record<string, never>>({
    name,
    kernels: [forwardKernel, backwardKernel],
    ...(inputRelu ? { fusionOf: ['relu', 'conv2d'] } : {}),
    forward(inputs) {
      const [x, w, bias] = inputs;
      requireF32(name, ...inputs);
      const d = convDims(x.shape, w.shape, bias?.shape);
      return withContiguous(inputs, ([xc, wc, bc]) => {
        const y = Tensor.empty([d.B, d.Cout, d.H, d.W], 'f32');
        opKernel<ConvForward>(forwardKernel)(xc.address, wc.address, bc ? bc.address : null, y.address,
          d.B, d.Cin, d.Cout, d.H, d.W, d.k);
        return y;
      });
    },
    backward(ctx, g) {
      const [x, w, bias] = ctx.inputs;
      const d = convDims(x.shape, w.shape, bias?.shape);
      const dx = x.requiresGrad ? Tensor.empty(x.shape, 'f32') : null;
      const dw = w.requiresGrad ? Tensor.empty(w.shape, 'f32') : null;
      const db = bias?.requiresGrad ? Tensor.empty(bias.shape, 'f32') : null;
      withContiguous([x, w, g], ([xc, wc, gc]) =>
        opKernel<ConvBackward>(backwardKernel)(xc.address, wc.address, gc.address, dx?.address ?? null,
          dw?.address ?? null, db?.address ?? null, d.B, d.Cin, d.Cout, d.H, d.W, d.k));
      return bias ? [dx, dw, db] : [dx, dw];
    },
    reference([x, w, bias]) {
      return refConv2d(inputRelu ? refRelu(x) : x, w, bias);
    },
    cases() {
      const cases: OpCase<Record<string, never>>[] = [];
      const shapes: Array<[number, number, number, number, number, number]> = [
        // B, Cin, Cout, H, W, k
        [1, 1, 1, 1, 1, 1], [1, 3, 7, 5, 7, 3], [3, 7, 5, 7, 5, 5], [2, 3, 33, 16, 16, 7], [2, 33, 7, 8, 6, 1],
        [1, 129, 3, 4, 4, 3], [2, 16, 16, 9, 9, 3],
      ];
      for (const [B, Cin, Cout, H, W, k] of shapes) {
        cases.push({
          name: `x (${B}, ${Cin}, ${H}, ${W}) k${k} -> ${Cout} with bias`,
          inputs: [{ shape: [B, Cin, H, W] }, { shape: [Cout, Cin, k, k] }, { shape: [Cout] }],
          attrs: {},
          // Each output sums Cin*k*k products of unit-scale terms: float32 rounding grows like sqrt(terms).
          tol: { atol: 1e-5 * Math.sqrt(Cin * k * k) },
        });
      }
      cases.push({ name: 'no bias', inputs: [{ shape: [2, 5, 6, 7] }, { shape: [3, 5, 3, 3] }], attrs: {} });
      // (With the ReLU, a normal input lands within the finite difference's step of 1e-5 from the kink at 0 with odds
      // of about 1e-5 per value, as for the relu op's own cases.)
      cases.push({ name: 'tiny full', inputs: [{ shape: [1, 2, 3, 3] }, { shape: [2, 2, 3, 3] }, { shape: [2] }], attrs: {}, gradcheck: 'full' });
      return cases;
    },
  });
}

function refRelu(x: RefTensor): RefTensor {
  const out = refTensor([...x.shape]);
  for (let i = 0; i < x.data.length; i++) out.data[i] = x.data[i] > 0 ? x.data[i] : 0;
  return out;
}

export const conv2dOp = defineConv2d('conv2d', 'conv2dForward', 'conv2dBackward', false);
export const reluConv2dOp = defineConv2d('reluConv2d', 'conv2dReluForward', 'conv2dReluBackward', true);

/** y = conv(x, w) + bias; x (B, Cin, H, W), w (Cout, Cin, k, k), bias (Cout). Stride 1, same padding. */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  return applyOp(conv2dOp, bias ? [x, w, bias] : [x, w], {});
}

/**
 * y = conv(ReLU(x), w) + bias, as conv2d(relu(x), w, bias): fused (reluConv2d) where x's backend has its kernels,
 * else the two ops.
 */
export function reluThenConv2d(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  if (opMissingKernels(reluConv2dOp, backendFor(x.device)).length === 0) {
    return applyOp(reluConv2dOp, bias ? [x, w, bias] : [x, w], {});
  }
  return conv2d(relu(x), w, bias);
}

// ---- max-pool 2x2 ------------------------------------------------------------------------------------------------

function poolDims(x: readonly number[]) {
  if (x.length !== 4 || x[2] % 2 !== 0 || x[3] % 2 !== 0) {
    throw new Error(`dalle: maxPool2x2 needs (B, C, H, W) with even H and W, got ${shapeStr(x)}`);
  }
  return { B: x[0], C: x[1], H: x[2], W: x[3] };
}

export const maxPool2x2Op = defineOp<Record<string, never>>({
  name: 'maxPool2x2',
  kernels: ['maxpool2x2Forward', 'maxpool2x2Backward'],
  forward([x], _attrs, ctx) {
    requireF32('maxPool2x2', x);
    const { B, C, H, W } = poolDims(x.shape);
    return withContiguous([x], ([xc]) => {
      const y = Tensor.empty([B, C, H / 2, W / 2], 'f32');
      const argmax = Tensor.empty([B, C, H / 2, W / 2], 'i32');
      opKernel<PoolForward>('maxpool2x2Forward')(xc.address, y.address, argmax.address, B, C, H, W);
      ctx.save('argmax', argmax);
      return y;
    });
  },
  backward(ctx, g) {
    const { B, C, H, W } = poolDims(ctx.inputs[0].shape);
    const dx = Tensor.empty(ctx.inputs[0].shape, 'f32');
    withContiguous([g], ([gc]) =>
      opKernel<PoolBackward>('maxpool2x2Backward')(gc.address, ctx.saved('argmax').address, dx.address, B, C, H, W));
    return [dx];
  },
  reference([x]) {
    const { B, C, H, W } = poolDims(x.shape);
    const y = refTensor([B, C, H / 2, W / 2]);
    for (let p = 0; p < B * C; p++) {
      for (let i = 0; i < H / 2; i++) {
        for (let j = 0; j < W / 2; j++) {
          let m = -Infinity;
          for (let di = 0; di < 2; di++) {
            for (let dj = 0; dj < 2; dj++) m = Math.max(m, x.data[(p * H + 2 * i + di) * W + 2 * j + dj]);
          }
          y.data[(p * (H / 2) + i) * (W / 2) + j] = m;
        }
      }
    }
    return y;
  },
  cases() {
    return [
      { inputs: [{ shape: [1, 1, 2, 2] }], attrs: {} },
      { inputs: [{ shape: [3, 7, 6, 10] }], attrs: {} },
      { inputs: [{ shape: [2, 33, 16, 16] }], attrs: {} },
      { inputs: [{ shape: [1, 129, 4, 2] }], attrs: {} },
      { name: 'tiny full', inputs: [{ shape: [1, 2, 4, 4] }], attrs: {}, gradcheck: 'full' as const },
    ];
  },
});

/** 2x2 max-pool with stride 2: (B, C, H, W) -> (B, C, H/2, W/2). The gradient goes to the first maximum. */
export function maxPool2x2(x: Tensor): Tensor {
  return applyOp(maxPool2x2Op, [x], {});
}

// ---- nearest 2x upsampling ---------------------------------------------------------------------------------------

function upDims(x: readonly number[]) {
  if (x.length !== 4) throw new Error(`dalle: upsample2x needs (B, C, H, W), got ${shapeStr(x)}`);
  return { B: x[0], C: x[1], H: x[2], W: x[3] };
}

export const upsample2xOp = defineOp<Record<string, never>>({
  name: 'upsample2x',
  kernels: ['upsample2xForward', 'upsample2xBackward'],
  forward([x]) {
    requireF32('upsample2x', x);
    const { B, C, H, W } = upDims(x.shape);
    return withContiguous([x], ([xc]) => {
      const y = Tensor.empty([B, C, 2 * H, 2 * W], 'f32');
      opKernel<UpForward>('upsample2xForward')(xc.address, y.address, B, C, H, W);
      return y;
    });
  },
  backward(ctx, g) {
    const { B, C, H, W } = upDims(ctx.inputs[0].shape);
    const dx = Tensor.empty(ctx.inputs[0].shape, 'f32');
    withContiguous([g], ([gc]) => opKernel<UpBackward>('upsample2xBackward')(gc.address, dx.address, B, C, H, W));
    return [dx];
  },
  reference([x]) {
    const { B, C, H, W } = upDims(x.shape);
    const y = refTensor([B, C, 2 * H, 2 * W]);
    for (let p = 0; p < B * C; p++) {
      for (let i = 0; i < 2 * H; i++) {
        for (let j = 0; j < 2 * W; j++) {
          y.data[(p * 2 * H + i) * 2 * W + j] = x.data[(p * H + (i >> 1)) * W + (j >> 1)];
        }
      }
    }
    return y;
  },
  cases() {
    return [
      { inputs: [{ shape: [1, 1, 1, 1] }], attrs: {} },
      { inputs: [{ shape: [3, 7, 5, 3] }], attrs: {} },
      { inputs: [{ shape: [2, 33, 8, 8] }], attrs: {} },
      { name: 'tiny full', inputs: [{ shape: [1, 2, 2, 3] }], attrs: {}, gradcheck: 'full' as const },
    ];
  },
});

/** Nearest-neighbour 2x upsampling: (B, C, H, W) -> (B, C, 2H, 2W). */
export function upsample2x(x: Tensor): Tensor {
  return applyOp(upsample2xOp, [x], {});
}
