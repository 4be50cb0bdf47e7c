// The prior's masked attention, behind one function, so the dense path (the dense `attention` op with a (T, T) mask
// from masks.ts) and the native sparse kernel (ops/sparse-attention.ts, when it lands) are one line apart.
// Keys: B = batch, H = heads, T = sequence positions (text then image), D = head width.
import { attention, slice, sparseAttention } from '../../ops';
import { Device, Tensor, keep } from '../../tensor';
import { MaskKind, MaskSpec, denseMask } from './masks';

/**
 * Masks of one prior: the dense (T, T) i32 mask of each kind, built once and kept (T = textLen + gridSide^2).
 * A forward over the first T' <= T positions uses the top-left (T', T') corner: the masks depend on absolute positions
 * only, so a prefix of the sequence has the prefix of the mask.
 */
export class PriorMasks {
  private readonly dense = new Map<MaskKind, Tensor>();
  private readonly corners = new Map<string, Tensor>();
  /** Where the masks are made: the prior's device (built on the host, copied there once per mask). */
  private device: Device = 'cpu';

  constructor(
    readonly textLen: number,
    readonly gridSide: number,
    readonly convKernel: number,
  ) {}

  /** T = L + N: every position. */
  get seqLen(): number {
    return this.textLen + this.gridSide * this.gridSide;
  }

  spec(kind: MaskKind): MaskSpec {
    return { kind, textLen: this.textLen, gridSide: this.gridSide, convKernel: this.convKernel };
  }

  /** The full (T, T) i32 mask of a kind (1 = query row may attend to key column). */
  full(kind: MaskKind): Tensor {
    let m = this.dense.get(kind);
    if (!m) {
      const host = denseMask(this.spec(kind));
      if (this.device === 'cpu') {
        m = keep(host);
      } else {
        m = keep(host.to(this.device));
        host.dispose();
      }
      this.dense.set(kind, m);
    }
    return m;
  }

  /**
   * The contiguous (T, T) top-left corner of a kind's mask, kept: a training forward runs T = L + N - 1 positions
   * every step, and a strided corner would be copied by the attention op each time.
   */
  prefix(kind: MaskKind, T: number): Tensor {
    const full = this.full(kind);
    if (T === full.shape[0]) return full;
    const key = `${kind}:${T}`;
    let m = this.corners.get(key);
    if (!m) {
      const view = slice(full, [[0, T], [0, T]]);
      m = keep(view.copyContiguousRaw());
      view.dispose();
      this.corners.set(key, m);
    }
    return m;
  }

  /** Masks are made on `device` from now on (those made so far are released and remade there when next used). */
  to(device: Device): void {
    if (device === this.device) return;
    this.dispose();
    this.device = device;
  }

  dispose(): void {
    for (const m of [...this.dense.values(), ...this.corners.values()]) m.dispose();
    this.dense.clear();
    this.corners.clear();
  }
}

/**
 * Self-attention over the first T positions with the layer's mask: q, k, v (B, H, T, D) (strided views are read in
 * place) -> (B, H, T, D). Over the whole sequence (T = L + N) the native sparse kernel (ops/sparse-attention.ts)
 * computes only the allowed key tiles; it equals the dense op with the dense mask (its harness checks that).
 */
export function priorSelfAttention(q: Tensor, k: Tensor, v: Tensor, masks: PriorMasks, kind: MaskKind): Tensor {
  const T = q.shape[2];
  // The native sparse kernel covers the whole sequence; a shorter prefix takes the dense op with the mask's corner.
  if (T === masks.seqLen) return sparseAttention(q, k, v, masks.spec(kind));
  return attention(q, k, v, masks.prefix(kind, T));
}

/**
 * KV-cached attention of the queries at positions [start, start + Tq) to the cached keys [0, start + Tq):
 * q (B, H, Tq, D), k, v (B, H, start + Tq, D) (views of the cache) -> (B, H, Tq, D). Uses the rows of the layer's
 * dense mask, so each query sees exactly the keys the full forward lets it see.
 */
export function priorCachedAttention(
  q: Tensor, k: Tensor, v: Tensor, start: number, masks: PriorMasks, kind: MaskKind,
): Tensor {
  const Tq = q.shape[2];
  const Tk = k.shape[2];
  const mask = slice(masks.full(kind), [[start, start + Tq], [0, Tk]]); // (Tq, Tk) rows of the full mask
  return attention(q, k, v, mask);
}
