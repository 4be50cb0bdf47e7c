// The op benchmark's shapes (bench/ops.ts): for each registered op, by name, the cases it runs on at the shapes the
// two emoji models really use (configs/prior-emoji.yaml: batch 8, d_model 256 = 8 heads x 32, 32 text + 256 image
// tokens, text vocabulary 1024 + 32 padding rows, image vocabulary 1024; configs/dvae-emoji.yaml: batch 16, 64 px,
// n_hid 64 (widths 64 / 128 / 256 over the 64 / 32 / 16 px groups, bottlenecks a quarter of that), vocabulary 1024).
// The shapes are functions of BenchDims, read from the configs, so a config change moves them, and the test runs them
// at TINY_DIMS. Each case mirrors calls that one training step makes (bench/lib/op-calls.ts counts them: the table
// weighs a case by its calls per step when its inputs and attributes match a call exactly).
// An op missing here still shows up in the benchmark, as "no shapes". FLOPs are the forward's; `bytes` overrides the
// default (inputs read + output written, at their dtypes) where an op moves less, e.g. 0 for views.
import * as path from 'path';
import { dvaeConfig, priorConfig, resolveConfig } from '../src/core/config';
import { MaskSpec, allowedPairs } from '../src/core/models/prior/masks';
import { permute } from '../src/core/ops';
import { InputSpec, Tensor } from '../src/core/tensor';

export type BenchModel = 'prior-emoji' | 'dvae-emoji';

export interface BenchCase {
  model: BenchModel;
  name: string;
  inputs: InputSpec[];
  attrs: unknown;
  /** Forward FLOPs (multiply-adds count 2). */
  flops: number;
  /** Forward+backward FLOPs; default 3 x flops (a backward is about two forwards: d input and d weight). */
  trainFlops?: number;
  /** Bytes the forward must move; default: inputs read + output written. */
  bytes?: number;
  /** Makes the op's real inputs from the fresh contiguous ones (e.g. a permuted view); disposes what it replaces. */
  prepare?: (inputs: Tensor[]) => Tensor[];
}

export interface BenchDims {
  prior: {
    B: number; textLen: number; grid: number; heads: number; headDim: number; textRows: number; imageVocab: number;
    convKernel: number;
  };
  dvae: { B: number; res: number; nHid: number; vocab: number };
}

const ROOT = path.join(__dirname, '..', '..');

/** The dimensions of configs/prior-emoji.yaml and configs/dvae-emoji.yaml (defaults filled by the config schema). */
export function dimsFromConfigs(root = ROOT): BenchDims {
  const p = resolveConfig(priorConfig, { file: path.join(root, 'configs', 'prior-emoji.yaml') });
  const d = resolveConfig(dvaeConfig, { file: path.join(root, 'configs', 'dvae-emoji.yaml') });
  return {
    prior: {
      B: p.train.batch_size, textLen: p.model.text_len, grid: p.model.image_grid, heads: p.model.n_heads,
      headDim: p.model.head_dim, textRows: p.model.text_vocab + p.model.text_len, imageVocab: p.model.image_vocab,
      convKernel: p.model.conv_kernel,
    },
    dvae: { B: d.train.batch_size, res: d.data.resolution, nHid: d.model.n_hid, vocab: d.model.vocab_size },
  };
}

/** Small enough to run every case in a test in well under a second. */
export const TINY_DIMS: BenchDims = {
  prior: { B: 2, textLen: 4, grid: 4, heads: 2, headDim: 4, textRows: 20, imageVocab: 16, convKernel: 3 },
  dvae: { B: 2, res: 8, nHid: 8, vocab: 16 },
};

const numel = (s: number[]): number => s.reduce((a, b) => a * b, 1);
const f = (shape: number[], extra: Partial<InputSpec> = {}): InputSpec => ({ shape, ...extra });

/** Elementwise FLOPs per element (rough instruction counts of the vector code; these ops are bandwidth-bound). */
const EW_FLOPS: Record<string, number> = {
  add: 1, sub: 1, mul: 1, div: 1, exp: 10, log: 10, sigmoid: 12, tanh: 12, relu: 1, gelu: 16, neg: 1, sqrt: 1,
  square: 1, affine: 2,
};

// Shapes shared by several ops.
function common(d: BenchDims) {
  const p = d.prior, v = d.dvae;
  const T = p.textLen + p.grid * p.grid, D = p.heads * p.headDim;
  return {
    T, D, N: p.grid * p.grid,
    hidden: [p.B, T, D],            // the prior's residual stream (B, T, d_model)
    mlp: [p.B, T, 4 * D],           // the prior's MLP hidden layer
    heads: [p.B, p.heads, T, p.headDim],
    pixels: [v.B, 3, v.res, v.res], // the dVAE's input and output images
    full: [v.B, v.nHid, v.res, v.res],          // the dVAE's first group (full resolution, n_hid channels)
    bottleneck: [v.B, v.nHid / 4, v.res, v.res], // its resblocks' hidden channels there
    logits: [v.B, v.res / 4, v.res / 4, v.vocab], // the encoder's code logits, channels last
  };
}

type Shapes = (d: BenchDims) => BenchCase[];

function binary(op: string): Shapes {
  return (d) => {
    const c = common(d);
    const rows: BenchCase[] = [];
    const pair = (model: BenchModel, name: string, a: number[], b: number[], kind: InputSpec['kind'] = 'normal') =>
      rows.push({ model, name, inputs: [f(a), f(b, { kind })], attrs: {}, flops: EW_FLOPS[op] * numel(a.length >= b.length ? a : b) });
    if (op === 'add') {
      pair('prior-emoji', 'residual (B,T,D)+(B,T,D)', c.hidden, c.hidden);
      pair('prior-emoji', 'bias (B,T,D)+(D)', c.hidden, [c.D]);
      pair('dvae-emoji', 'resblock skip, 64 px', c.full, c.full);
    } else if (op === 'mul') {
      pair('dvae-emoji', 'KL probs x log-ratio', c.logits, c.logits);
      pair('prior-emoji', '(B,T,D)x(B,T,D)', c.hidden, c.hidden);
    } else {
      pair('dvae-emoji', 'pixels', c.pixels, c.pixels, op === 'div' ? 'positive' : 'normal');
    }
    return rows;
  };
}

function unary(op: string, cases: Array<[BenchModel, string, number[]]>, kind: InputSpec['kind'] = 'normal'): Shapes {
  return () => cases.map(([model, name, shape]) => ({ model, name, inputs: [f(shape, { kind })], attrs: {}, flops: EW_FLOPS[op] * numel(shape) }));
}

function unaryAt(op: string, pick: (c: ReturnType<typeof common>) => Array<[BenchModel, string, number[]]>, kind?: InputSpec['kind']): Shapes {
  return (d) => unary(op, pick(common(d)), kind)(d);
}

/** A view: nothing moves in the forward (the backward's copy is counted by the default). */
const VIEW = { flops: 0, bytes: 0 };

function sparse(d: BenchDims, kind: MaskSpec['kind']): BenchCase {
  const p = d.prior, c = common(d);
  const spec: MaskSpec = { kind, textLen: p.textLen, gridSide: p.grid, convKernel: p.convKernel };
  // Q K^T and P V over the allowed (query, key) pairs only: 2 x 2 x head_dim FLOPs per pair and head.
  const flops = 4 * p.B * p.heads * allowedPairs(spec) * p.headDim;
  return { model: 'prior-emoji', name: `${kind} mask (B,H,T,hd)`, inputs: [f(c.heads), f(c.heads), f(c.heads)], attrs: { spec }, flops, trainFlops: 3.5 * flops };
}

// inputGrad false: the step never asks for d input (the encoder's input conv reads the images), so fwd+bwd times
// dw and db only, and the FLOP bound counts two forwards, not three.
function conv(d: BenchDims, name: string, B: number, cin: number, cout: number, hw: number, k: number,
  inputGrad = true): BenchCase {
  const flops = 2 * B * cout * hw * hw * cin * k * k;
  return {
    model: 'dvae-emoji', name, inputs: [f([B, cin, hw, hw], { grad: inputGrad }), f([cout, cin, k, k]), f([cout])],
    attrs: {}, flops, trainFlops: inputGrad ? 3 * flops : 2 * flops,
  };
}

function linear(name: string, x: number[], outF: number, model: BenchModel = 'prior-emoji', dtype?: InputSpec['dtype']): BenchCase {
  const inF = x[x.length - 1];
  return {
    model, name, inputs: [f(x, dtype ? { dtype } : {}), f([outF, inF], dtype ? { dtype } : {})], attrs: { transB: true },
    flops: 2 * (numel(x) / inF) * inF * outF,
  };
}

export const OP_BENCH_SHAPES: Record<string, Shapes> = {
  matmul: (d) => {
    const c = common(d), p = d.prior;
    return [
      linear('q/k/v/out x W^T (B,T,D)x(D,D)', c.hidden, c.D),
      linear('MLP up (B,T,D)x(4D,D)', c.hidden, 4 * c.D),
      linear('MLP down (B,T,4D)x(D,4D)', c.mlp, c.D),
      linear('image logits (B,N,D)x(V,D)', [p.B, c.N, c.D], p.imageVocab),
      linear('MLP up, bf16', c.hidden, 4 * c.D, 'prior-emoji', 'bf16'),
    ];
  },
  sparseAttention: (d) => [sparse(d, 'row'), sparse(d, 'column'), sparse(d, 'conv')],
  attention: (d) => {
    const p = d.prior, c = common(d);
    // Dense causal attention over the whole sequence (CLIP and the dense fallback), 2 x 2 x hd FLOPs per pair.
    const flops = 4 * p.B * p.heads * ((c.T * (c.T + 1)) / 2) * p.headDim;
    return [{ model: 'prior-emoji', name: 'causal (B,H,T,hd)', inputs: [f(c.heads), f(c.heads), f(c.heads)], attrs: { causal: true }, flops, trainFlops: 3.5 * flops }];
  },
  conv2d: (d) => {
    // The dVAE's convolutions with the most FLOPs per step that take no ReLU first (widths from n_hid).
    const v = d.dvae, h = v.nHid, r = v.res;
    return [
      conv(d, 'input 7x7 3->h, 64 px', v.B, 3, h, r, 7, false),
      conv(d, '1x1 4h->vocab code logits, 16 px', v.B, 4 * h, v.vocab, r / 4, 1),
      conv(d, '1x1 vocab->2h from codes, 16 px', v.B, v.vocab, 2 * h, r / 4, 1),
      conv(d, '1x1 4h->2h skip, 32 px', v.B, 4 * h, 2 * h, r / 2, 1),
      conv(d, '1x1 2h->h skip, 64 px', v.B, 2 * h, h, r, 1),
    ];
  },
  reluConv2d: (d) => {
    // The res paths' convolutions (each follows a ReLU) and the decoder's output, encoder and decoder.
    const v = d.dvae, h = v.nHid, r = v.res;
    return [
      conv(d, '3x3 h->h/4 resblock in, 64 px', v.B, h, h / 4, r, 3),
      conv(d, '3x3 bottleneck h/4, 64 px', v.B, h / 4, h / 4, r, 3),
      conv(d, '3x3 h/4->h resblock out, 64 px', v.B, h / 4, h, r, 3),
      conv(d, '1x1 h/4->h resblock out, 64 px', v.B, h / 4, h, r, 1),
      conv(d, '3x3 bottleneck h/2, 32 px', v.B, h / 2, h / 2, r / 2, 3),
      conv(d, '3x3 h/2->2h resblock out, 32 px', v.B, h / 2, 2 * h, r / 2, 3),
      conv(d, '3x3 bottleneck h, 16 px', v.B, h, h, r / 4, 3),
      conv(d, '3x3 h->4h resblock out, 16 px', v.B, h, 4 * h, r / 4, 3),
      conv(d, '1x1 h->6 output, 64 px', v.B, h, 6, r, 1),
    ];
  },
  layerNorm: (d) => {
    const c = common(d);
    return [{ model: 'prior-emoji', name: '(B,T,D)', inputs: [f(c.hidden), f([c.D]), f([c.D])], attrs: { eps: 1e-5 }, flops: 8 * numel(c.hidden) }];
  },
  embedding: (d) => {
    const p = d.prior, c = common(d);
    const lookup = (name: string, rows: number, idx: number[]): BenchCase => ({
      model: 'prior-emoji', name, inputs: [f([rows, c.D]), { shape: idx, dtype: 'i32', kind: 'int', low: 0, high: rows }], attrs: {}, flops: 0,
      bytes: 4 * numel(idx) + 2 * 4 * numel(idx) * c.D, // indices, the rows read, the rows written
    });
    return [lookup('image tokens (B,N)', p.imageVocab, [p.B, c.N]), lookup('text tokens (B,text)', p.textRows, [p.B, p.textLen])];
  },
  crossEntropy: (d) => {
    const p = d.prior, c = common(d);
    const logits = [p.B, c.N, p.imageVocab];
    return [{
      model: 'prior-emoji', name: 'image logits (B,N,V)', inputs: [f(logits), { shape: [p.B, c.N], dtype: 'i32', kind: 'int', low: 0, high: p.imageVocab }],
      attrs: {}, flops: 12 * numel(logits),
    }];
  },
  softmax: (d) => {
    const c = common(d);
    return [{ model: 'dvae-emoji', name: 'code logits (B,h,w,V)', inputs: [f(c.logits)], attrs: {}, flops: 14 * numel(c.logits) }];
  },
  logSoftmax: (d) => {
    const c = common(d);
    return [{ model: 'dvae-emoji', name: 'code logits (B,h,w,V)', inputs: [f(c.logits)], attrs: {}, flops: 14 * numel(c.logits) }];
  },
  // The fused codebook ops read the code logits channels first, (B, V, h, w): bound by one read (and the relaxed codes'
  // write), their exp counted like softmax's.
  codebookStats: (d) => {
    const [B, h, w, V] = common(d).logits;
    return [{ model: 'dvae-emoji', name: 'code logits (B,V,h,w)', inputs: [f([B, V, h, w])], attrs: {}, flops: 14 * B * V * h * w }];
  },
  relaxedCodes: (d) => {
    const [B, h, w, V] = common(d).logits;
    return [{
      model: 'dvae-emoji', name: 'code logits (B,V,h,w), tau 0.5', inputs: [f([B, V, h, w])],
      attrs: { tau: 0.5, key0: 1, key1: 0, offsetLo: 0, offsetHi: 0 }, flops: 14 * B * V * h * w,
    }];
  },
  sum: (d) => {
    const c = common(d);
    return [
      { model: 'dvae-emoji', name: 'all of (B,h,w,V)', inputs: [f(c.logits)], attrs: { axes: null, keepDims: false }, flops: numel(c.logits) },
      { model: 'dvae-emoji', name: 'all of the pixels', inputs: [f(c.pixels)], attrs: { axes: null, keepDims: false }, flops: numel(c.pixels) },
    ];
  },
  mean: (d) => {
    const c = common(d);
    return [{ model: 'dvae-emoji', name: 'code usage: (B,h,w,V) over 0,1,2', inputs: [f(c.logits)], attrs: { axes: [0, 1, 2], keepDims: false }, flops: numel(c.logits) }];
  },
  max: (d) => {
    const p = d.prior, c = common(d);
    const logits = [p.B, c.N, p.imageVocab];
    return [{ model: 'prior-emoji', name: 'logits (B,N,V) over V', inputs: [f(logits)], attrs: { axes: [2], keepDims: false }, flops: numel(logits) }];
  },
  add: binary('add'),
  sub: binary('sub'),
  mul: binary('mul'),
  div: binary('div'),
  exp: unaryAt('exp', (c) => [['dvae-emoji', 'code logits (B,h,w,V)', c.logits], ['dvae-emoji', 'pixels', c.pixels]]),
  log: unaryAt('log', (c) => [['dvae-emoji', 'pixels', c.pixels]], 'positive'),
  sigmoid: unaryAt('sigmoid', (c) => [['dvae-emoji', 'pixels', c.pixels]]),
  tanh: unaryAt('tanh', (c) => [['prior-emoji', 'MLP hidden (B,T,4D)', c.mlp]]),
  relu: unaryAt('relu', (c) => [['dvae-emoji', 'bottleneck, 64 px', c.bottleneck], ['dvae-emoji', 'group 1, 64 px', c.full]]),
  gelu: unaryAt('gelu', (c) => [['prior-emoji', 'MLP hidden (B,T,4D)', c.mlp]]),
  neg: unaryAt('neg', (c) => [['dvae-emoji', 'pixels', c.pixels]]),
  sqrt: unaryAt('sqrt', (c) => [['prior-emoji', '(B,T,D)', c.hidden]], 'positive'),
  square: unaryAt('square', (c) => [['prior-emoji', '(B,T,D)', c.hidden]]),
  affine: (d) => {
    const c = common(d);
    return [{ model: 'dvae-emoji', name: 'resblock post-gain, 64 px', inputs: [f(c.full)], attrs: { alpha: 1 / 9, beta: 0 }, flops: 2 * numel(c.full) }];
  },
  concat: (d) => {
    const p = d.prior, c = common(d);
    return [{ model: 'prior-emoji', name: 'text + image embeddings', inputs: [f([p.B, p.textLen, c.D]), f([p.B, c.N, c.D])], attrs: { axis: 1 }, flops: 0 }];
  },
  slice: (d) => {
    const p = d.prior, c = common(d);
    return [{ model: 'prior-emoji', name: 'image positions of (B,T,D)', inputs: [f(c.hidden)], attrs: { ranges: [[0, p.B], [p.textLen - 1, c.T - 1]] }, ...VIEW }];
  },
  reshape: (d) => {
    const p = d.prior, c = common(d);
    return [{ model: 'prior-emoji', name: 'split heads (B,T,D)', inputs: [f(c.hidden)], attrs: { shape: [p.B, c.T, p.heads, p.headDim] }, ...VIEW }];
  },
  permute: (d) => {
    const p = d.prior, c = common(d);
    return [{ model: 'prior-emoji', name: 'heads first (B,T,H,hd)', inputs: [f([p.B, c.T, p.heads, p.headDim])], attrs: { dims: [0, 2, 1, 3] }, ...VIEW }];
  },
  contiguous: (d) => {
    const v = d.dvae;
    // The dVAE's code logits, channels last, permuted to channels first and made contiguous (a real strided copy).
    return [{
      model: 'dvae-emoji', name: 'code logits NHWC -> NCHW', inputs: [f([v.B, v.res / 4, v.res / 4, v.vocab])], attrs: {}, flops: 0,
      prepare: ([x]) => {
        const y = permute(x, [0, 3, 1, 2]);
        x.dispose(); // the view keeps the storage
        return [y];
      },
    }];
  },
  cast: (d) => {
    const c = common(d);
    return [
      { model: 'prior-emoji', name: 'f32 -> bf16 (B,T,D)', inputs: [f(c.hidden)], attrs: { to: 'bf16' }, flops: 0 },
      { model: 'prior-emoji', name: 'bf16 -> f32 (B,T,D)', inputs: [f(c.hidden, { dtype: 'bf16' })], attrs: { to: 'f32' }, flops: 0 },
    ];
  },
  maxPool2x2: (d) => {
    const c = common(d);
    return [{ model: 'dvae-emoji', name: 'group 1 -> 2', inputs: [f(c.full)], attrs: {}, flops: numel(c.full) }];
  },
  upsample2x: (d) => {
    const v = d.dvae;
    const x = [v.B, 4 * v.nHid, v.res / 4, v.res / 4];
    return [{ model: 'dvae-emoji', name: 'decoder 16 -> 32 px', inputs: [f(x)], attrs: {}, flops: 0 }];
  },
  roundFloat: (d) => {
    const c = common(d);
    return [{ model: 'prior-emoji', name: 'to bf16 (B,T,D)', inputs: [f(c.hidden)], attrs: { dtype: 'bf16' }, flops: numel(c.hidden) }];
  },
  gradScaleEnter: (d) => {
    const c = common(d);
    return [{ model: 'prior-emoji', name: '(B,T,D), scale 2^13', inputs: [f(c.hidden)], attrs: { scale: 8192 }, flops: 0, bytes: 0 }];
  },
  gradScaleLeave: (d) => {
    const c = common(d);
    return [{ model: 'prior-emoji', name: '(B,T,D), scale 2^13', inputs: [f(c.hidden)], attrs: { scale: 8192 }, flops: 0, bytes: 0 }];
  },
};
