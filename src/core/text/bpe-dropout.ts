/**
 * The BPE merge loop of one word, with BPE dropout (Provilkov, Emelianenko, Voita, "BPE-Dropout: Simple and Effective
 * Subword Regularization", ACL 2020), in plain TS so that its random choices come from our seeded Philox stream and a
 * resumed training run sees exactly the same token sequences (Hugging Face's own dropout draws from an unseeded RNG).
 *
 * Merges are ranked: merge r was learned r-th, and lower ranks apply first. One step of the loop:
 *   candidates = every adjacent pair (i, i+1) of the word's current symbols that has a merge, ordered by
 *                (rank, i) (the leftmost occurrence of the best pair first, as Hugging Face's priority queue);
 *   each candidate in that order is dropped with probability p (one uniform draw each) until one is kept;
 *   the kept candidate is merged, and the loop repeats; if every candidate was dropped (or there are none), the word
 *   is done.
 * With p = 0 nothing is drawn and this is ordinary greedy BPE, token for token the same as the library (tested).
 * With p = 1 no merge ever applies: the word stays in base symbols (bytes).
 */
import type { Philox } from '../tensor/rng';

/** One merge: the ids of its two parts and of the token it makes. */
export interface BpeMerge {
  readonly left: number;
  readonly right: number;
  readonly result: number;
}

interface Ranked {
  readonly rank: number;
  readonly result: number;
}

export class BpeMerger {
  /** left * idSpace + right -> rank and result. A later duplicate of a pair overrides the earlier one, as in HF. */
  private readonly table = new Map<number, Ranked>();
  private readonly idSpace: number;

  /** `merges` in rank order; every id must be below `idSpace` (the vocabulary size). */
  constructor(merges: readonly BpeMerge[], idSpace: number) {
    this.idSpace = idSpace;
    merges.forEach((merge, rank) => this.table.set(merge.left * idSpace + merge.right, { rank, result: merge.result }));
  }

  get mergeCount(): number {
    return this.table.size;
  }

  private lookup(left: number, right: number): Ranked | undefined {
    return this.table.get(left * this.idSpace + right);
  }

  /**
   * Merge the symbols (token ids) of one word and return the merged ids; `symbols` is not changed. `dropout` in
   * [0, 1]; an `rng` is needed only when dropout > 0.
   */
  merge(symbols: readonly number[], dropout = 0, rng?: Philox): number[] {
    const word = symbols.slice();
    if (dropout > 0 && rng === undefined) throw new RangeError('BPE dropout needs an rng (a seeded Philox)');
    if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`BPE dropout must be in [0, 1], got ${dropout}`);
    if (dropout === 0) {
      for (;;) {
        let bestAt = -1;
        let best: Ranked | undefined;
        for (let i = 0; i + 1 < word.length; i++) {
          const found = this.lookup(word[i], word[i + 1]);
          if (found !== undefined && (best === undefined || found.rank < best.rank)) {
            best = found;
            bestAt = i;
          }
        }
        if (best === undefined) return word;
        word.splice(bestAt, 2, best.result);
      }
    }
    for (;;) {
      const candidates: { at: number; rank: number; result: number }[] = [];
      for (let i = 0; i + 1 < word.length; i++) {
        const found = this.lookup(word[i], word[i + 1]);
        if (found !== undefined) candidates.push({ at: i, rank: found.rank, result: found.result });
      }
      candidates.sort((a, b) => a.rank - b.rank || a.at - b.at);
      const kept = candidates.find(() => rng!.uniform() >= dropout);
      if (kept === undefined) return word;
      word.splice(kept.at, 2, kept.result);
    }
  }
}
