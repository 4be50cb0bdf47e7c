/**
 * Per-resblock gradient scales (Ramesh et al. 2021, Appendix B.2; docs/ARCHITECTURE.md "Models").
 *
 * One scale per resblock (in the prior: the attention and the MLP sublayer of each layer are one resblock each). The
 * rules, with M = data-parallel workers:
 * - every scale starts at init * M (paper: 2^13 * M) and stays in [min * M, max * M] (paper: [2^7 M, 2^24 M]);
 * - after a clean update (no resblock saw a non-finite gradient) every scale is multiplied by growth (2^(1/1000));
 * - when resblock r saw a non-finite gradient, the update is skipped and scale r is divided by backoff (sqrt 2).
 *   The scales of the resblocks that were finite in that step stay as they are: no update was taken, and growth is
 *   "per clean update"; so a resblock that overflows lowers its own scale only, never the others'.
 * Scales are float64 numbers and change only by these multiplications and clamps, so a run's trace can be replayed
 * exactly (test/train/precision.test.ts), and state() / load() carry them through checkpoints bit for bit (JSON keeps
 * float64 values exactly).
 */

export interface GradScaleRules {
  /** Initial scale per worker (paper: 2^13). */
  init: number;
  /** Factor after each clean update (paper: 2^(1/1000)). */
  growth: number;
  /** Divisor after a non-finite gradient in the resblock (paper: sqrt 2). */
  backoff: number;
  /** Smallest and largest scale per worker (paper: 2^7, 2^24). */
  min: number;
  max: number;
}

export const PAPER_GRAD_SCALE: GradScaleRules = { init: 2 ** 13, growth: 2 ** (1 / 1000), backoff: Math.SQRT2, min: 2 ** 7, max: 2 ** 24 };

export interface GradScalerState {
  /** The scale of each resblock. */
  scales: number[];
  /** Updates skipped so far (a non-finite gradient in some resblock). */
  skipped: number;
  /** Updates taken so far. */
  updates: number;
  /** The data-parallel workers M the scales were for (absent in runs saved before data parallelism: 1). */
  workers?: number;
}

export class GradScaler {
  readonly scales: number[];
  skipped = 0;
  updates = 0;
  private readonly lo: number;
  private readonly hi: number;
  /** Non-finite gradient values seen in each resblock since the last endStep(). */
  private readonly nonFinite: number[];

  constructor(readonly count: number, readonly rules: GradScaleRules, readonly workers = 1) {
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`dalle: GradScaler needs at least one resblock, got ${count}`);
    if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`dalle: GradScaler: data-parallel workers must be an integer >= 1, got ${workers}`);
    const { init, growth, backoff, min, max } = rules;
    if (!(min > 0 && min <= init && init <= max) || !(growth >= 1) || !(backoff >= 1)) {
      throw new RangeError(`dalle: GradScaler: need 0 < min <= init <= max, growth >= 1, backoff >= 1; got ${JSON.stringify(rules)}`);
    }
    this.lo = min * workers;
    this.hi = max * workers;
    this.scales = new Array<number>(count).fill(init * workers);
    this.nonFinite = new Array<number>(count).fill(0);
  }

  scale(r: number): number {
    this.check(r);
    return this.scales[r];
  }

  /** Records `count` non-finite gradient values in resblock r during the current step. */
  flag(r: number, count = 1): void {
    this.check(r);
    this.nonFinite[r] += count;
  }

  /**
   * Data parallelism: `reduceMax` replaces each resblock's count of non-finite values by the largest over the ranks
   * (in place), so every rank flags the same resblocks, skips the same updates and keeps the same scales.
   */
  agree(reduceMax: (counts: Float64Array) => void): void {
    const counts = Float64Array.from(this.nonFinite);
    reduceMax(counts);
    counts.forEach((n, r) => (this.nonFinite[r] = n));
  }

  /** The resblocks that saw a non-finite gradient in the current step. */
  flagged(): number[] {
    const out: number[] = [];
    this.nonFinite.forEach((n, r) => n > 0 && out.push(r));
    return out;
  }

  /**
   * Ends a step: when no resblock was flagged, the update counts as taken and every scale grows (clamped to the
   * max); otherwise it counts as skipped and each flagged resblock's scale backs off (clamped to the min). Returns
   * whether the update was (to be) taken. Clears the flags.
   */
  endStep(): boolean {
    const bad = this.flagged();
    if (bad.length === 0) {
      for (let r = 0; r < this.count; r++) this.scales[r] = Math.min(this.hi, this.scales[r] * this.rules.growth);
      this.updates++;
    } else {
      for (const r of bad) this.scales[r] = Math.max(this.lo, this.scales[r] / this.rules.backoff);
      this.skipped++;
    }
    this.nonFinite.fill(0);
    return bad.length === 0;
  }

  state(): GradScalerState {
    return { scales: [...this.scales], skipped: this.skipped, updates: this.updates, workers: this.workers };
  }

  load(state: GradScalerState): void {
    if (!state || !Array.isArray(state.scales) || state.scales.length !== this.count) {
      throw new Error(`dalle: GradScaler: the saved state has ${state?.scales?.length ?? 'no'} scales, this model has ${this.count} resblocks`);
    }
    // A run resumed with another number of workers keeps each scale relative to its workers (scales are init x M).
    const savedWorkers = state.workers ?? 1;
    if (!Number.isInteger(savedWorkers) || savedWorkers < 1) throw new Error(`dalle: GradScaler: the saved state's workers ${savedWorkers} is not a count`);
    const scales = state.scales.map((s) => (typeof s === 'number' ? (s * this.workers) / savedWorkers : s));
    for (const s of scales) {
      if (typeof s !== 'number' || !(s >= this.lo && s <= this.hi)) {
        throw new Error(`dalle: GradScaler: saved scale ${s} lies outside [${this.lo}, ${this.hi}]`);
      }
    }
    scales.forEach((s, r) => (this.scales[r] = s as number));
    this.skipped = Number(state.skipped) || 0;
    this.updates = Number(state.updates) || 0;
    this.nonFinite.fill(0);
  }

  private check(r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.count) throw new RangeError(`dalle: GradScaler: resblock ${r} is outside [0, ${this.count})`);
  }
}
