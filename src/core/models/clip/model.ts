/**
 * A small CLIP (Radford et al., 2021) for reranking and for dalle's own image features: a text transformer over the
 * caption BPE tokens and a convolutional image tower, each ending in a linear projection to a shared embedding space,
 * trained with the symmetric contrastive (InfoNCE) loss at a learned temperature.
 *
 *   text:  tokens (B, L) i32 -> token + position embeddings -> causal pre-LN transformer blocks -> final LN
 *          -> the features at each caption's end-of-text token (B, W) -> Linear -> (B, E)
 *   image: pixels (B, 3, R, R) in [0, 1] -> (x - 0.5) / 0.25 -> `stages` x [conv3x3, ReLU, max-pool 2x2]
 *          -> mean over positions (B, C) -> Linear -> (B, E)
 *   loss:  logits = exp(t) * norm(img) norm(txt)^T (B, B); (CE(logits, diag) + CE(logits^T, diag)) / 2
 *
 * As in CLIP the text attention is causal, so the padding after the end-of-text token never reaches it, and t starts
 * at log(1 / 0.07). Token ids: 0..V-1 are the tokenizer's, V is end-of-text, and positions after it hold 0 (never
 * read). Key: B = batch, L = context length, W = text width, H = heads, C = image channels, E = embedding size.
 */
import { add, addScalar, affine, attention, contiguous, conv2d, crossEntropy, div, embedding, exp, gelu, matmul, maxPool2x2, mean, mul, permute, relu, reshape, sqrt, square, sum, transpose } from '../../ops';
import { LayerNorm, Linear, Module, normalInit } from '../../nn';
import { Tensor } from '../../tensor';
import { Philox } from '../../tensor/rng';

export interface ClipArch {
  /** Tokenizer vocabulary (the end-of-text id is this value, so the embedding has vocab + 1 rows). */
  readonly vocab: number;
  /** Tokens per caption, end-of-text included; longer captions are cut. */
  readonly context: number;
  readonly textWidth: number;
  readonly textLayers: number;
  readonly textHeads: number;
  /** Image side the tower is trained at. */
  readonly resolution: number;
  /** Channels of each conv stage (each halves the side). */
  readonly imageChannels: readonly number[];
  readonly embed: number;
}

/** Small enough to train on the emoji set on 2 CPU cores in minutes. */
export const CLIP_EMOJI_ARCH: Omit<ClipArch, 'vocab'> = {
  context: 24,
  textWidth: 128,
  textLayers: 2,
  textHeads: 4,
  resolution: 32,
  imageChannels: [32, 64, 128, 128],
  embed: 128,
};

const INIT_STD = 0.02;

class Block extends Module {
  readonly ln1: LayerNorm;
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly proj: Linear;
  readonly ln2: LayerNorm;
  readonly fc: Linear;
  readonly out: Linear;

  constructor(readonly W: number, readonly H: number, layers: number, rng: Philox) {
    super();
    this.ln1 = this.addModule('ln1', new LayerNorm(W));
    this.q = this.addModule('q', new Linear(W, W, rng, { std: INIT_STD }));
    this.k = this.addModule('k', new Linear(W, W, rng, { std: INIT_STD }));
    this.v = this.addModule('v', new Linear(W, W, rng, { std: INIT_STD }));
    this.proj = this.addModule('proj', new Linear(W, W, rng, { std: INIT_STD / Math.sqrt(2 * layers) }));
    this.ln2 = this.addModule('ln2', new LayerNorm(W));
    this.fc = this.addModule('fc', new Linear(W, 4 * W, rng, { std: INIT_STD }));
    this.out = this.addModule('out', new Linear(4 * W, W, rng, { std: INIT_STD / Math.sqrt(2 * layers) }));
  }

  /** (B, L, W) -> (B, H, L, D): a view of the projection. */
  private heads(x: Tensor): Tensor {
    const [B, L] = x.shape;
    return permute(reshape(x, [B, L, this.H, this.W / this.H]), [0, 2, 1, 3]);
  }

  /** x (B, L, W) -> (B, L, W) */
  forward(x: Tensor): Tensor {
    const [B, L, W] = x.shape;
    const a = this.ln1.forward(x);
    const o = attention(this.heads(this.q.forward(a)), this.heads(this.k.forward(a)), this.heads(this.v.forward(a)), null, { causal: true }); // (B, H, L, D)
    const h = add(x, this.proj.forward(reshape(permute(o, [0, 2, 1, 3]), [B, L, W])));
    return add(h, this.out.forward(gelu(this.fc.forward(this.ln2.forward(h)))));
  }
}

class BlockList extends Module {
  readonly blocks: Block[] = [];
  constructor(arch: ClipArch, rng: Philox) {
    super();
    for (let i = 0; i < arch.textLayers; i++) this.blocks.push(this.addModule(String(i), new Block(arch.textWidth, arch.textHeads, arch.textLayers, rng)));
  }
}

class ConvStage extends Module {
  readonly w: Tensor;
  readonly b: Tensor;
  constructor(cin: number, cout: number, rng: Philox) {
    super();
    // He initialisation for a ReLU layer: std sqrt(2 / fan_in).
    this.w = this.addParameter('w', normalInit([cout, cin, 3, 3], Math.sqrt(2 / (cin * 9)), rng));
    this.b = this.addParameter('b', Tensor.zeros([cout]));
  }
  forward(x: Tensor): Tensor {
    return maxPool2x2(relu(conv2d(x, this.w, this.b)));
  }
}

class ImageTower extends Module {
  readonly stages: ConvStage[] = [];
  constructor(arch: ClipArch, rng: Philox) {
    super();
    let cin = 3;
    arch.imageChannels.forEach((c, i) => {
      this.stages.push(this.addModule(String(i), new ConvStage(cin, c, rng)));
      cin = c;
    });
  }
}

export class Clip extends Module {
  readonly tokenEmbedding: Tensor;
  readonly positionEmbedding: Tensor;
  readonly blocks: BlockList;
  readonly lnFinal: LayerNorm;
  readonly textProjection: Linear;
  readonly image: ImageTower;
  readonly imageProjection: Linear;
  /** log of the inverse temperature (CLIP: initialised to log(1 / 0.07)). */
  readonly logitScale: Tensor;

  constructor(readonly arch: ClipArch, rng: Philox) {
    super();
    const minSide = arch.resolution / 2 ** arch.imageChannels.length;
    if (!Number.isInteger(minSide) || minSide < 1) {
      throw new RangeError(`dalle: CLIP image side ${arch.resolution} cannot be halved ${arch.imageChannels.length} times`);
    }
    if (arch.textWidth % arch.textHeads !== 0) throw new RangeError(`dalle: CLIP text width ${arch.textWidth} is not a multiple of ${arch.textHeads} heads`);
    this.tokenEmbedding = this.addParameter('token_embedding', normalInit([arch.vocab + 1, arch.textWidth], INIT_STD, rng));
    this.positionEmbedding = this.addParameter('position_embedding', normalInit([arch.context, arch.textWidth], 0.01, rng));
    this.blocks = this.addModule('blocks', new BlockList(arch, rng));
    this.lnFinal = this.addModule('ln_final', new LayerNorm(arch.textWidth));
    this.textProjection = this.addModule('text_projection', new Linear(arch.textWidth, arch.embed, rng, { bias: false }));
    this.image = this.addModule('image', new ImageTower(arch, rng));
    const last = arch.imageChannels[arch.imageChannels.length - 1];
    this.imageProjection = this.addModule('image_projection', new Linear(last, arch.embed, rng, { bias: false }));
    this.logitScale = this.addParameter('logit_scale', Tensor.from([Math.log(1 / 0.07)], [1]));
  }

  /** The end-of-text token id. */
  get eot(): number {
    return this.arch.vocab;
  }

  /**
   * Caption token ids (from the tokenizer) -> the model's (L) row: cut to L - 1 tokens, end-of-text, zeros after.
   * Returns the row and the position of its end-of-text token.
   */
  packTokens(ids: readonly number[]): { row: Int32Array; end: number } {
    const L = this.arch.context;
    const row = new Int32Array(L);
    const n = Math.min(ids.length, L - 1);
    for (let i = 0; i < n; i++) row[i] = ids[i];
    row[n] = this.eot;
    return { row, end: n };
  }

  /** tokens (B, L) i32 and each row's end-of-text position -> unnormalised text embeddings (B, E). */
  encodeText(tokens: Tensor, ends: readonly number[]): Tensor {
    const [B, L] = tokens.shape;
    let h = add(embedding(this.tokenEmbedding, tokens), this.positionEmbedding); // (B, L, W)
    for (const block of this.blocks.blocks) h = block.forward(h);
    h = this.lnFinal.forward(h);
    // Gather row b's end-of-text features: an embedding lookup into the (B * L, W) rows (its backward scatters back).
    const rows = Tensor.from(Int32Array.from(ends, (e, b) => b * L + e), [B], 'i32', tokens.device); // with the batch
    const pooled = embedding(reshape(h, [B * L, this.arch.textWidth]), rows); // (B, W)
    return this.textProjection.forward(pooled);
  }

  /** The image tower's pooled features (B, C) of pixels (B, 3, R, R) in [0, 1]. */
  imageFeatures(pixels: Tensor): Tensor {
    let x = affine(pixels, 4, -2); // (x - 0.5) / 0.25
    for (const stage of this.image.stages) x = stage.forward(x);
    return mean(x, [2, 3]); // (B, C)
  }

  /** pixels (B, 3, R, R) in [0, 1] -> unnormalised image embeddings (B, E). */
  encodeImage(pixels: Tensor): Tensor {
    return this.imageProjection.forward(this.imageFeatures(pixels));
  }

  /** The symmetric contrastive loss of a batch of matching (image, caption) pairs; also the batch's logits. */
  loss(pixels: Tensor, tokens: Tensor, ends: readonly number[], gather: (rows: Tensor) => Tensor = (rows) => rows): { loss: Tensor; logits: Tensor } {
    // Data parallelism: `gather` puts every rank's rows together (distributed/gather-over-ranks.ts), so the loss
    // compares every pair of the global batch; one process: the rows as they are.
    const img = gather(l2Normalize(this.encodeImage(pixels))); // (B, E)
    const txt = gather(l2Normalize(this.encodeText(tokens, ends))); // (B, E)
    const B = img.shape[0];
    const logits = mul(matmul(img, txt, { transB: true }), exp(this.logitScale)); // (B, B): image i against text j
    const targets = Tensor.from(Int32Array.from({ length: B }, (_, i) => i), [B], 'i32', tokens.device); // with the batch
    const imageToText = crossEntropy(logits, targets);
    const textToImage = crossEntropy(contiguous(transpose(logits)), targets);
    return { loss: affine(add(imageToText, textToImage), 0.5), logits };
  }
}

/** x / |x| along the last dimension (B, E). */
export function l2Normalize(x: Tensor): Tensor {
  return div(x, sqrt(addScalar(sum(square(x), -1, true), 1e-12)));
}

/** Whether a parameter gets weight decay: weight matrices and conv kernels, not gains, biases, embeddings or t. */
export function clipDecays(name: string): boolean {
  return /(\.(q|k|v|proj|fc|out)\.weight|\.w|_projection\.weight)$/.test(name);
}
