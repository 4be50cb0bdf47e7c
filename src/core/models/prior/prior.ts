/**
 * The transformer prior (Ramesh et al. 2021, Appendix B; docs/ARCHITECTURE.md "Models"): one decoder-only transformer over
 * text tokens then image tokens.
 *
 * Key: B = batch, L = text_len (text positions), G = image_grid (tokens per side), N = G^2 image positions,
 * n = image tokens given (n <= N), T = positions in the forward, C = d_model = n_heads * head_dim, H = heads,
 * D = head_dim, Vt = text_vocab, Vi = image_vocab.
 *
 * - Text: token embedding over Vt + L entries: ids [0, Vt) are BPE tokens, Vt + p is the learned padding token of
 *   text position p (padText puts it at every empty position), plus a learned position embedding (L, C).
 * - Image: token embedding (Vi, C) plus a row (G, C) and a column (G, C) embedding of its grid position.
 * - Blocks (pre-norm): x += proj(attention(LN(x)) with the layer's mask); x += fc2(gelu(fc1(LN(x)))) (MLP 4C).
 *   Layer i's mask kind is layerMaskKind(i, n_layers) (masks.ts): row, column, ..., the last convolutional.
 * - Final LayerNorm, then two unembeddings: text_head (C -> Vt + L, pad tokens included: the paper treats padding
 *   positions as ordinary positions) and image_head (C -> Vi).
 * - Position t's output predicts token t + 1: text positions 0..L-2 predict text tokens 1..L-1, the last text
 *   position predicts image token 0, image position i predicts image token i + 1. So a forward over a caption and n
 *   image tokens runs T = L + n - 1 positions (the last image token is only a target).
 *
 * KV cache (generation): createCache(B) preallocates K and V (B, H, L + N, D) per layer (and copies each layer's
 * q/k/v weights into one (3C, C) projection, one GEMM a step instead of three); prefill(cache, text,
 * prefix?) runs the positions of the caption (and an image prefix) and returns the logits of the next image token;
 * step(cache, tokens) appends one image token and returns the logits of the one after it. Each cached query attends to
 * exactly the keys its row of the layer's mask allows, so the logits equal the full forward's (test/models/prior).
 */
import { Module, normalInit } from '../../nn/module';
import { Embedding, LayerNorm, Linear } from '../../nn/layers';
import { add, crossEntropy, gelu, matmul, permute, reshape, scale, slice, concat, embedding } from '../../ops';
import { Device, Philox, Tensor, checkpointed, keep, noGrad, shapeStr, tidy } from '../../tensor';
import type { PriorConfig } from '../../config/schemas/prior';
import { PriorMasks, priorCachedAttention, priorSelfAttention } from './attention';
import { MaskKind, layerMaskKind } from './masks';
export { priorParameterCount, priorTrainingMemory } from './size';

export type PriorArch = PriorConfig['model'];

/** Init scale of weights and embeddings (GPT-2's 0.02); residual projections get 0.02 / sqrt(2 n_layers). */
const INIT_STD = 0.02;

/** The text token standing for "empty" at text position p: Vt + p. */
export function padToken(p: number, textVocab: number): number {
  return textVocab + p;
}

/**
 * Captions as token ids -> (B * L) i32, row-major (B, L): each row's ids, truncated to L, then the padding token of
 * each empty position (Vt + p). Ids must lie in [0, Vt).
 */
export function padText(ids: readonly (readonly number[])[], textLen: number, textVocab: number): Int32Array {
  const out = new Int32Array(ids.length * textLen);
  ids.forEach((row, b) => {
    for (let p = 0; p < textLen; p++) {
      if (p < row.length) {
        const id = row[p];
        if (!(Number.isInteger(id) && id >= 0 && id < textVocab)) {
          throw new RangeError(`dalle: padText: token ${id} of caption ${b} (position ${p}) is outside the text vocabulary [0, ${textVocab})`);
        }
        out[b * textLen + p] = id;
      } else {
        out[b * textLen + p] = padToken(p, textVocab);
      }
    }
  });
  return out;
}

/** Whether a parameter gets weight decay: the matrices of the linear layers, not gains, biases or embeddings. */
export function priorDecays(name: string): boolean {
  return /(\.attn\.(q|k|v|proj)|\.mlp\.(fc|proj)|^text_head|^image_head)\.weight$/.test(name);
}

class Attention extends Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly proj: Linear;

  constructor(readonly C: number, readonly H: number, nLayers: number, rng: Philox) {
    super();
    this.q = this.addModule('q', new Linear(C, C, rng, { std: INIT_STD }));
    this.k = this.addModule('k', new Linear(C, C, rng, { std: INIT_STD }));
    this.v = this.addModule('v', new Linear(C, C, rng, { std: INIT_STD }));
    this.proj = this.addModule('proj', new Linear(C, C, rng, { std: INIT_STD / Math.sqrt(2 * nLayers) }));
  }

  /** (B, T, C) -> (B, H, T, D): a view of the projection (attention reads it in place). */
  private heads(x: Tensor): Tensor {
    const [B, T] = x.shape;
    return permute(reshape(x, [B, T, this.H, this.C / this.H]), [0, 2, 1, 3]);
  }

  /**
   * The q, k and v projections as one (3C, C) weight and (3C) bias (rows q, then k, then v), or null without biases.
   * A KV cache keeps them for its generation, so a step runs one GEMM and one bias add instead of three of each.
   */
  fusedQkv(): { weight: Tensor; bias: Tensor } | null {
    const [q, k, v] = [this.q, this.k, this.v];
    if (!q.bias || !k.bias || !v.bias) return null;
    return noGrad(() => ({ weight: concat([q.weight, k.weight, v.weight], 0), bias: concat([q.bias!, k.bias!, v.bias!], 0) }));
  }

  /** (B, T, C) -> q, k, v (B, H, T, D) each: views of the projections (attention and writeCache read them in place). */
  private projections(x: Tensor, fused?: { weight: Tensor; bias: Tensor }): [Tensor, Tensor, Tensor] {
    if (!fused) return [this.heads(this.q.forward(x)), this.heads(this.k.forward(x)), this.heads(this.v.forward(x))];
    const [B, T] = x.shape;
    const H = this.H;
    const qkv = add(matmul(x, fused.weight, { transB: true }), fused.bias); // (B, T, 3C)
    const heads = permute(reshape(qkv, [B, T, 3 * H, this.C / H]), [0, 2, 1, 3]); // (B, 3H, T, D)
    const part = (i: number) => slice(heads, [[0, B], [i * H, (i + 1) * H]]);
    return [part(0), part(1), part(2)];
  }

  /**
   * x (B, T, C) -> (B, T, C). With a cache, the T positions start at `start` and their K/V are written into it (and
   * its fused q/k/v projection is used when it has one: the same dot products, in one GEMM).
   */
  forward(x: Tensor, masks: PriorMasks, kind: MaskKind, cache?: LayerCache): Tensor {
    const [B, T, C] = x.shape;
    const [q, k, v] = this.projections(x, cache?.qkv ?? undefined); // (B, H, T, D) each
    let o: Tensor; // (B, H, T, D)
    if (cache) {
      const end = cache.start + T;
      writeCache(cache.k, k, cache.start);
      writeCache(cache.v, v, cache.start);
      const kc = slice(cache.k, [[0, B], [0, this.H], [0, end]]); // (B, H, start + T, D) views of the cache
      const vc = slice(cache.v, [[0, B], [0, this.H], [0, end]]);
      o = priorCachedAttention(q, kc, vc, cache.start, masks, kind);
    } else {
      o = priorSelfAttention(q, k, v, masks, kind);
    }
    return this.proj.forward(reshape(permute(o, [0, 2, 1, 3]), [B, T, C]));
  }
}

/** One layer's part of a PriorKvCache for a forward starting at position `start`. */
interface LayerCache {
  k: Tensor;
  v: Tensor;
  start: number;
  qkv?: { weight: Tensor; bias: Tensor } | null;
}

/** cache[:, :, start:start+T] = x, x (B, H, T, D) (any strides), cache (B', H, Tmax, D) contiguous, B <= B'. */
function writeCache(cache: Tensor, x: Tensor, start: number): void {
  const [, H, Tmax, D] = cache.shape;
  if (cache.backend !== x.backend) throw new Error(`dalle: KV cache on ${cache.device}, keys/values on ${x.device}`);
  cache.backend.stridedCopy(cache.address + start * D * 4, x.address, 4, [...x.shape], [H * Tmax * D, Tmax * D, D, 1], [...x.strides]);
}

class Mlp extends Module {
  readonly fc: Linear;
  readonly proj: Linear;

  constructor(C: number, nLayers: number, rng: Philox) {
    super();
    this.fc = this.addModule('fc', new Linear(C, 4 * C, rng, { std: INIT_STD }));
    this.proj = this.addModule('proj', new Linear(4 * C, C, rng, { std: INIT_STD / Math.sqrt(2 * nLayers) }));
  }

  forward(x: Tensor): Tensor {
    return this.proj.forward(gelu(this.fc.forward(x)));
  }
}

/**
 * How a residual branch f joins the stream at x: x + f(x) (plainResidual). A mixed-precision Precision object
 * (train/precision) implements it too, adding per-resblock fp16 gradient scaling; resblock r = 2 * layer (attention)
 * or 2 * layer + 1 (MLP).
 */
export interface ResidualHook {
  resblock(r: number, x: Tensor, f: (x: Tensor) => Tensor): Tensor;
}

export const plainResidual: ResidualHook = { resblock: (_r, x, f) => add(x, f(x)) };

class Block extends Module {
  readonly ln1: LayerNorm;
  readonly attn: Attention;
  readonly ln2: LayerNorm;
  readonly mlp: Mlp;

  constructor(C: number, H: number, nLayers: number, readonly kind: MaskKind, rng: Philox) {
    super();
    this.ln1 = this.addModule('ln_1', new LayerNorm(C));
    this.attn = this.addModule('attn', new Attention(C, H, nLayers, rng));
    this.ln2 = this.addModule('ln_2', new LayerNorm(C));
    this.mlp = this.addModule('mlp', new Mlp(C, nLayers, rng));
  }

  /** Resblocks r (attention) and r + 1 (MLP), each x + f(x) through `residual` (mixed precision: train/precision). */
  forward(x: Tensor, masks: PriorMasks, cache?: LayerCache, residual: ResidualHook = plainResidual, r = 0): Tensor {
    const h = residual.resblock(r, x, (y) => this.attn.forward(this.ln1.forward(y), masks, this.kind, cache));
    return residual.resblock(r + 1, h, (y) => this.mlp.forward(this.ln2.forward(y)));
  }
}

/** Preallocated keys and values of every layer, (B, H, L + N, D) each, and how many positions are filled. */
export class PriorKvCache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  /**
   * Per layer, its q/k/v projection weights fused ((3C, C) and (3C)), copied when the cache is made (the weights do
   * not change during a generation); null where a layer has none (createCache(batch, false), or no biases).
   */
  readonly qkv: Array<{ weight: Tensor; bias: Tensor } | null> = [];
  /** Positions filled (text, then image tokens). */
  length = 0;

  /** On `device`: the prior's (keys and values are written there by each forward). */
  constructor(readonly batch: number, nLayers: number, H: number, readonly capacity: number, D: number, device: Device = 'cpu') {
    for (let i = 0; i < nLayers; i++) {
      this.k.push(keep(Tensor.empty([batch, H, capacity, D], 'f32', device)));
      this.v.push(keep(Tensor.empty([batch, H, capacity, D], 'f32', device)));
    }
  }

  get disposed(): boolean {
    return this.k.length > 0 && this.k[0].disposed;
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    for (const f of this.qkv) if (f) for (const t of [f.weight, f.bias]) t.dispose();
  }
}

export interface PriorLossWeights {
  text: number;
  image: number;
}

export class Prior extends Module {
  readonly textLen: number;
  readonly gridSide: number;
  readonly imageVocab: number;
  readonly textVocab: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly headDim: number;
  readonly dModel: number;
  readonly textEmbedding: Embedding;
  readonly textPosition: Tensor;
  readonly imageEmbedding: Embedding;
  readonly imageRow: Embedding;
  readonly imageCol: Embedding;
  readonly blocks: Block[] = [];
  /** How residual branches join the stream (2 resblocks per layer); a trainer sets its Precision here. */
  residual: ResidualHook = plainResidual;
  /**
   * Activation recomputation (config train.recompute): in training, each block's forward keeps only its output and is
   * run again during backward (tensor/checkpoint.ts): less memory, about one more forward of the trunk per step.
   */
  recompute = false;
  readonly lnF: LayerNorm;
  readonly textHead: Linear;
  readonly imageHead: Linear;
  private readonly masks: PriorMasks;
  /** Row and column of each image position, (N) i32 each. */
  private readonly rowIndex: Tensor;
  private readonly colIndex: Tensor;

  constructor(model: PriorArch, rng: Philox) {
    super();
    this.textLen = model.text_len;
    this.gridSide = model.image_grid;
    this.imageVocab = model.image_vocab;
    this.textVocab = model.text_vocab;
    this.nLayers = model.n_layers;
    this.nHeads = model.n_heads;
    this.headDim = model.head_dim;
    const C = (this.dModel = model.n_heads * model.head_dim);
    const L = this.textLen;
    const G = this.gridSide;
    this.textEmbedding = this.addModule('text_embedding', new Embedding(this.textVocab + L, C, rng, INIT_STD));
    this.textPosition = this.addParameter('text_position', normalInit([L, C], INIT_STD, rng));
    this.imageEmbedding = this.addModule('image_embedding', new Embedding(this.imageVocab, C, rng, INIT_STD));
    this.imageRow = this.addModule('image_row', new Embedding(G, C, rng, INIT_STD));
    this.imageCol = this.addModule('image_col', new Embedding(G, C, rng, INIT_STD));
    const blocks = this.addModule('blocks', new BlockList());
    for (let i = 0; i < this.nLayers; i++) {
      this.blocks.push(blocks.add(String(i), new Block(C, this.nHeads, this.nLayers, layerMaskKind(i, this.nLayers), rng)));
    }
    this.lnF = this.addModule('ln_f', new LayerNorm(C));
    this.textHead = this.addModule('text_head', new Linear(C, this.textVocab + L, rng, { std: INIT_STD }));
    this.imageHead = this.addModule('image_head', new Linear(C, this.imageVocab, rng, { std: INIT_STD }));
    this.masks = new PriorMasks(L, G, model.conv_kernel);
    const rows = new Int32Array(G * G);
    const cols = new Int32Array(G * G);
    for (let i = 0; i < G * G; i++) {
      rows[i] = Math.floor(i / G);
      cols[i] = i % G;
    }
    this.rowIndex = keep(Tensor.from(rows, [G * G], 'i32'));
    this.colIndex = keep(Tensor.from(cols, [G * G], 'i32'));
  }

  /**
   * Where the weights are: the index tables move with them (to()). Module's getter walks every parameter's dotted
   * name, and the generation loop asks once per token.
   */
  override get device(): Device {
    return this.rowIndex.device;
  }

  /** N = G^2 image positions. */
  get imageLen(): number {
    return this.gridSide * this.gridSide;
  }

  /** Total positions L + N. */
  get seqLen(): number {
    return this.textLen + this.imageLen;
  }

  /** The mask kind of each layer (masks.ts layerMaskKind). */
  get layerKinds(): MaskKind[] {
    return this.blocks.map((b) => b.kind);
  }

  private checkText(text: Tensor): number {
    if (text.dtype !== 'i32' || text.rank !== 2 || text.shape[1] !== this.textLen) {
      throw new Error(`dalle: prior: text must be i32 (B, ${this.textLen}) (padded with padText), got ${text.dtype} ${shapeStr(text.shape)}`);
    }
    return text.shape[0];
  }

  private checkImage(image: Tensor, B: number, what: string): number {
    if (image.dtype !== 'i32' || image.rank !== 2 || image.shape[0] !== B || image.shape[1] > this.imageLen) {
      throw new Error(`dalle: prior: ${what} must be i32 (${B}, n) with n <= ${this.imageLen}, got ${image.dtype} ${shapeStr(image.shape)}`);
    }
    return image.shape[1];
  }

  /** Text embeddings (B, L, C). */
  private embedText(text: Tensor): Tensor {
    return add(this.textEmbedding.forward(text), this.textPosition);
  }

  /** Embeddings (B, m, C) of image tokens (B, m) at image positions start..start+m-1. */
  private embedImage(tokens: Tensor, start: number): Tensor {
    const m = tokens.shape[1];
    const rows = slice(this.rowIndex, [[start, start + m]]);
    const cols = slice(this.colIndex, [[start, start + m]]);
    const pos = add(embedding(this.imageRow.weight, rows), embedding(this.imageCol.weight, cols)); // (m, C)
    return add(this.imageEmbedding.forward(tokens), pos);
  }

  /** The transformer over x (B, T, C) -> final-normalized states (B, T, C). */
  private trunk(x: Tensor, cache?: PriorKvCache, start = 0): Tensor {
    let h = x;
    this.blocks.forEach((block, i) => {
      const layer = cache ? { k: cache.k[i], v: cache.v[i], start, qkv: cache.qkv[i] } : undefined;
      const run = (y: Tensor): Tensor => block.forward(y, this.masks, layer, this.residual, 2 * i);
      // Recomputation wraps the whole block, its two residual hooks included (fp16's per-resblock scale boundaries
      // are in the recomputed graph); a cached forward writes K/V, so it is never recomputed (it is noGrad anyway).
      // A cached forward (noGrad: nothing is kept for a backward) frees each block's temporaries as it ends, so the
      // peak holds one block's, not all n_layers' (a batch-32 prefill held about 360 MB of them at prior-emoji sizes).
      if (cache) h = tidy(() => run(h));
      else h = this.recompute ? checkpointed(run, [h]) : run(h);
    });
    return this.lnF.forward(h);
  }

  /**
   * text (B, L) i32 (padded), image (B, n) i32 with 1 <= n <= N. Returns the logits of every next token:
   * textLogits (B, L - 1, Vt + L) for text tokens 1..L-1, imageLogits (B, n, Vi) for image tokens 0..n-1.
   */
  forward(text: Tensor, image: Tensor): { textLogits: Tensor; imageLogits: Tensor } {
    const B = this.checkText(text);
    const n = this.checkImage(image, B, 'image');
    if (n < 1) throw new Error('dalle: prior.forward needs at least one image token (the targets of the image logits)');
    const L = this.textLen;
    const parts = [this.embedText(text)];
    // With the whole grid, the last image token is fed too (its output predicts nothing): T = L + N, the length the
    // sparse attention kernel covers, for 1/(L + N) more work. A shorter prefix runs T = L + n - 1 positions.
    const fed = n === this.imageLen ? n : n - 1;
    if (fed > 0) parts.push(this.embedImage(fed === n ? image : slice(image, [[0, B], [0, fed]]), 0));
    const x = parts.length > 1 ? concat(parts, 1) : parts[0]; // (B, L + fed, C)
    const h = this.trunk(x);
    const textLogits = this.textHead.forward(slice(h, [[0, B], [0, L - 1]])); // (B, L - 1, Vt + L)
    const imageLogits = this.imageHead.forward(slice(h, [[0, B], [L - 1, L - 1 + n]])); // (B, n, Vi)
    return { textLogits, imageLogits };
  }

  /**
   * The training objective in nats per token: weights.text * mean text cross-entropy (text tokens 1..L-1, padding
   * tokens included) + weights.image * mean image cross-entropy (all n image tokens).
   */
  loss(text: Tensor, image: Tensor, weights: PriorLossWeights = { text: 1 / 8, image: 7 / 8 }): { loss: Tensor; textLoss: Tensor; imageLoss: Tensor } {
    const { textLogits, imageLogits } = this.forward(text, image);
    const B = text.shape[0];
    const imageLoss = crossEntropy(imageLogits, image);
    const textLoss = this.textLen > 1
      ? crossEntropy(textLogits, slice(text, [[0, B], [1, this.textLen]]))
      : Tensor.scalar(0, 'f32', text.device);
    const loss = add(scale(textLoss, weights.text), scale(imageLoss, weights.image));
    return { loss, textLoss, imageLoss };
  }

  /**
   * K/V buffers for `batch` sequences of up to L + N positions, and each layer's fused q/k/v projection (3 C^2 + 3 C
   * floats a layer; fuseQkv false: none, each projection on its own). Dispose it when done.
   */
  createCache(batch: number, fuseQkv = true): PriorKvCache {
    const cache = new PriorKvCache(batch, this.nLayers, this.nHeads, this.seqLen, this.headDim, this.device);
    for (const block of this.blocks) {
      const fused = fuseQkv ? block.attn.fusedQkv() : null;
      if (fused) {
        keep(fused.weight);
        keep(fused.bias);
      }
      cache.qkv.push(fused);
    }
    return cache;
  }

  /**
   * Runs the caption (B, L) and an optional image prefix (B, m) from position 0, filling the cache, and returns the
   * logits (B, Vi) of image token m (the next one). No gradients are recorded.
   */
  prefill(cache: PriorKvCache, text: Tensor, imagePrefix?: Tensor): Tensor {
    const B = this.checkText(text);
    const m = imagePrefix ? this.checkImage(imagePrefix, B, 'imagePrefix') : 0;
    this.checkCache(cache, B, this.textLen + m);
    if (m >= this.imageLen) throw new Error(`dalle: prior.prefill: the prefix already has all ${this.imageLen} image tokens; nothing is left to predict`);
    return noGrad(() =>
      tidy(() => {
        const parts = [this.embedText(text)];
        if (imagePrefix && m > 0) parts.push(this.embedImage(imagePrefix, 0));
        const x = parts.length > 1 ? concat(parts, 1) : parts[0];
        const T = x.shape[1];
        const h = this.trunk(x, cache, 0);
        cache.length = T;
        return this.lastLogits(h, B, T);
      }),
    );
  }

  /** Appends image tokens (B) i32 at the next position and returns the logits (B, Vi) of the token after them. */
  step(cache: PriorKvCache, imageTokens: Tensor): Tensor {
    const B = imageTokens.shape[0];
    if (imageTokens.dtype !== 'i32' || imageTokens.rank !== 1) {
      throw new Error(`dalle: prior.step: image tokens must be i32 (B), got ${imageTokens.dtype} ${shapeStr(imageTokens.shape)}`);
    }
    const start = cache.length;
    if (start < this.textLen) throw new Error('dalle: prior.step: prefill the cache with a caption first');
    const i = start - this.textLen; // the image position of the appended token
    if (i >= this.imageLen - 1) {
      throw new Error(`dalle: prior.step: the cache already holds ${i} of ${this.imageLen} image tokens; the last one has no next token to predict`);
    }
    this.checkCache(cache, B, start + 1);
    return noGrad(() =>
      tidy(() => {
        const x = this.embedImage(reshape(imageTokens, [B, 1]), i); // (B, 1, C)
        const h = this.trunk(x, cache, start);
        cache.length = start + 1;
        return this.lastLogits(h, B, 1);
      }),
    );
  }

  private lastLogits(h: Tensor, B: number, T: number): Tensor {
    const last = slice(h, [[0, B], [T - 1, T]]); // (B, 1, C)
    return reshape(this.imageHead.forward(last), [B, this.imageVocab]);
  }

  private checkCache(cache: PriorKvCache, B: number, needed: number): void {
    if (cache.disposed) throw new Error('dalle: prior: the KV cache was disposed');
    if (B > cache.batch) throw new Error(`dalle: prior: a batch of ${B} does not fit a KV cache made for ${cache.batch}`);
    if (needed > cache.capacity) throw new Error(`dalle: prior: ${needed} positions do not fit the KV cache (${cache.capacity})`);
  }

  /** Parameters, the position index tables and the attention masks, all to `device`. */
  override to(device: Device): this {
    super.to(device);
    this.rowIndex.moveTo(device);
    this.colIndex.moveTo(device);
    this.masks.to(device);
    return this;
  }

  override dispose(): void {
    super.dispose();
    this.masks.dispose();
    this.rowIndex.dispose();
    this.colIndex.dispose();
  }
}

/** A named list of blocks ("blocks.0.ln_1.weight"). */
class BlockList extends Module {
  add<M extends Module>(name: string, m: M): M {
    return this.addModule(name, m);
  }
}
