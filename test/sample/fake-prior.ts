/**
 * A tiny stand-in for the prior with the same interface (sampler.ts PriorLike), in plain TypeScript: the logits of
 * image token t are a function of the text, t, the previous token and the token one row above, from fixed random
 * tables. Its cache holds the tokens seen so far, so prefill/step and forward must agree exactly; it checks the
 * generation loop's bookkeeping (positions, prompts, guidance rows) independently of the real model.
 */
import { Tensor } from '../../src/core/tensor';
import { Philox } from '../../src/core/tensor/rng';
import type { PriorLike } from '../../src/core/sample/sampler';

interface FakeCache {
  batch: number;
  text: Int32Array;
  tokens: number[][];
  disposed: boolean;
  dispose(): void;
}

export class FakePrior implements PriorLike {
  readonly textVocab: number;
  readonly textLen: number;
  readonly gridSide: number;
  readonly imageVocab: number;
  private readonly textTable: Float64Array; // (textVocab + textLen, V)
  private readonly posTable: Float64Array; // (N, V)
  private readonly prevTable: Float64Array; // (V + 1, V), row V = no previous token
  private readonly aboveTable: Float64Array; // (V + 1, V), row V = first row
  caches = 0;
  open = 0;

  constructor(options: { textVocab: number; textLen: number; gridSide: number; imageVocab: number; seed?: number }) {
    ({ textVocab: this.textVocab, textLen: this.textLen, gridSide: this.gridSide, imageVocab: this.imageVocab } = options);
    const rng = new Philox(options.seed ?? 1);
    const V = this.imageVocab;
    const N = this.gridSide ** 2;
    this.textTable = rng.fillNormal(new Float64Array((this.textVocab + this.textLen) * V));
    this.posTable = rng.fillNormal(new Float64Array(N * V), 0, 0.5);
    this.prevTable = rng.fillNormal(new Float64Array((V + 1) * V), 0, 2);
    this.aboveTable = rng.fillNormal(new Float64Array((V + 1) * V), 0, 2);
  }

  /** Logits (V) of image position t for one row, given its text (Tt) and its tokens before t. */
  private logitsAt(text: ArrayLike<number>, tokens: ArrayLike<number>, t: number, out: Float32Array, offset: number): void {
    const V = this.imageVocab;
    const W = this.gridSide;
    const prev = t > 0 ? tokens[t - 1] : V;
    const above = t >= W ? tokens[t - W] : V;
    for (let v = 0; v < V; v++) {
      let s = this.posTable[t * V + v] + this.prevTable[prev * V + v] + 0.5 * this.aboveTable[above * V + v];
      for (let p = 0; p < this.textLen; p++) s += this.textTable[text[p] * V + v] / this.textLen;
      out[offset + v] = s;
    }
  }

  forward(text: Tensor, image: Tensor): { imageLogits: Tensor } {
    const [B, Tt] = text.shape;
    const n = image.shape[1];
    const V = this.imageVocab;
    const t32 = text.toArray() as Int32Array;
    const i32 = image.toArray() as Int32Array;
    const out = new Float32Array(B * n * V);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < n; t++) this.logitsAt(t32.subarray(b * Tt, (b + 1) * Tt), i32.subarray(b * n, (b + 1) * n), t, out, (b * n + t) * V);
    }
    return { imageLogits: Tensor.from(out, [B, n, V]) };
  }

  createCache(batch: number): FakeCache {
    this.caches++;
    this.open++;
    const cache: FakeCache = {
      batch,
      text: new Int32Array(0),
      tokens: Array.from({ length: batch }, () => []),
      disposed: false,
      dispose: () => {
        if (!cache.disposed) this.open--;
        cache.disposed = true;
      },
    };
    return cache;
  }

  private next(cache: FakeCache): Tensor {
    const V = this.imageVocab;
    const out = new Float32Array(cache.batch * V);
    for (let b = 0; b < cache.batch; b++) {
      const toks = cache.tokens[b];
      this.logitsAt(cache.text.subarray(b * this.textLen, (b + 1) * this.textLen), toks, toks.length, out, b * V);
    }
    return Tensor.from(out, [cache.batch, V]);
  }

  prefill(cacheIn: unknown, text: Tensor, imagePrefix?: Tensor): Tensor {
    const cache = cacheIn as FakeCache;
    if (text.shape[0] !== cache.batch) throw new Error(`fake prior: text batch ${text.shape[0]} != cache batch ${cache.batch}`);
    cache.text = Int32Array.from(text.toArray());
    if (imagePrefix) {
      const r = imagePrefix.shape[1];
      const p = imagePrefix.toArray();
      for (let b = 0; b < cache.batch; b++) cache.tokens[b] = Array.from(p.subarray(b * r, (b + 1) * r));
    }
    return this.next(cache);
  }

  step(cacheIn: unknown, imageTokens: Tensor): Tensor {
    const cache = cacheIn as FakeCache;
    const t = imageTokens.toArray();
    if (t.length !== cache.batch) throw new Error(`fake prior: ${t.length} tokens for a cache of ${cache.batch}`);
    for (let b = 0; b < cache.batch; b++) cache.tokens[b].push(t[b]);
    if (cache.tokens[0].length >= this.gridSide ** 2) throw new Error('fake prior: step past the last image position');
    return this.next(cache);
  }
}
