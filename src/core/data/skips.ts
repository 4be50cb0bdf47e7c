/**
 * SkipReport: what was left out of a data set and why. Sources fill it while indexing, the loader while decoding;
 * `dataset inspect` and the loader's events report it. Counts are exact; examples are capped so a million bad
 * files do not mean a million-line report.
 */
import { SkipReason } from './errors';

export interface SkippedExample {
  readonly reason: SkipReason;
  /** The record: a relative path, `manifest.jsonl:12`, or `shard-000.tar:sample42`. */
  readonly id: string;
  readonly detail: string;
}

/** The JSON form of a SkipReport (in --json output, dataset.json and inspect results). */
export interface SkipSummary {
  readonly total: number;
  readonly byReason: Partial<Record<SkipReason, number>>;
  readonly examples: readonly SkippedExample[];
}

/** Examples kept per reason: enough to find the pattern, few enough to print. */
const EXAMPLES_PER_REASON = 5;

export class SkipReport {
  private readonly counts = new Map<SkipReason, number>();
  private readonly kept: SkippedExample[] = [];

  add(reason: SkipReason, id: string, detail: string): void {
    const count = (this.counts.get(reason) ?? 0) + 1;
    this.counts.set(reason, count);
    if (count <= EXAMPLES_PER_REASON) this.kept.push({ reason, id, detail });
  }

  /** Adds every count and example of `other` (a source's index-time skips into the loader's report). */
  merge(other: SkipReport): void {
    for (const [reason, count] of other.counts) {
      const before = this.counts.get(reason) ?? 0;
      this.counts.set(reason, before + count);
      const room = Math.max(0, EXAMPLES_PER_REASON - before);
      this.kept.push(...other.kept.filter((example) => example.reason === reason).slice(0, room));
    }
  }

  get total(): number {
    let total = 0;
    for (const count of this.counts.values()) total += count;
    return total;
  }

  count(reason: SkipReason): number {
    return this.counts.get(reason) ?? 0;
  }

  toJSON(): SkipSummary {
    const byReason: Partial<Record<SkipReason, number>> = {};
    for (const reason of [...this.counts.keys()].sort()) byReason[reason] = this.counts.get(reason);
    return { total: this.total, byReason, examples: [...this.kept] };
  }

  /** `3 skipped (corrupt 2, not-an-image 1)`, or `none skipped`. */
  describe(): string {
    const total = this.total;
    if (total === 0) return 'none skipped';
    const parts = Object.entries(this.toJSON().byReason).map(([reason, count]) => `${reason} ${count}`);
    return `${total} skipped (${parts.join(', ')})`;
  }
}
