/**
 * PowerSGD gradient compression (Vogels et al. 2019, "PowerSGD: Practical Low-Rank Gradient Compression for
 * Distributed Optimization"; the DALL-E paper, Section 2.5, trained its 12B prior with it): each rank's gradient
 * matrix M (n x m, powersgd-layout.ts) is replaced by the mean over ranks of a rank-r approximation, and what the
 * approximation missed is added to the next update's gradient (error feedback), so nothing is lost, only delayed.
 *
 * One update, for every compressed matrix (Q (m x r) is identical on every rank: seeded, then warm-started):
 *   M = grad + error                      (this rank's; error starts at 0)
 *   P = M Q            all-reduce P (mean) P = mean_k(M_k) Q, the same on every rank
 *   P = orthonormal columns of P          (Gram-Schmidt, twice, in f32: orthonormalizeRows)
 *   Q = M^T P          all-reduce Q (mean) Q = mean_k(M_k)^T P
 *   M_hat = P Q^T                          = P P^T mean_k(M_k): the same on every rank
 *   error = M - M_hat; grad = M_hat; Q is kept for the next update (warm start).
 * Gradients that do not pay to compress are all-reduced as they are, in one bucket. Each update issues three
 * allReduceBuffers calls: that bucket (first, so it travels while the factors are computed), every P, every Q.
 *
 * Layout: matrices of one shape form a group and are computed as one batch (the prior's 64 layers share a few
 * shapes), and every P is stored transposed, (B, r, n), so that P's columns are contiguous rows for Gram-Schmidt.
 * Everything runs with the engine's ops on the parameters' device; the one host read per update is a finiteness check.
 *
 * The gradients must be the true (unscaled) ones, or at least on the same scale every update: the error buffer carries
 * over from one update to the next. Only the mean of the ranks' errors is what the compression has not delivered yet;
 * each rank's own error also accumulates its gradient's deviation from the mean (sum_t (G_k,t - mean_k G_k,t): a
 * random walk for stochastic gradients), which cancels in the mean, as in Vogels et al.'s algorithm. An all-reduce
 * that fails (CollectiveError) leaves the error buffers holding M: the run stops there.
 */
import { Collective, DeviceBuffer } from './collective';
import { checkPowerSgdOptions, compressionPays, matrixView } from './powersgd-layout';
import { add, addScalar, div, matmul, mul, slice, sqrt, square, sub, sum } from '../ops';
import {
  Philox, Tensor, addInPlace, contiguousStrides, keep, noGrad, randNormal, scaleInPlace, shapeStr, sumSquaresOf, tidy,
} from '../tensor';

/** What one update sent, for the metrics `allreduce_bytes` and `allreduce_bytes_uncompressed`. */
export interface ReduceReport {
  /** Bytes this rank handed to all-reduces this update: P and Q of every compressed matrix, the rest as it is (f32). */
  readonly allreduceBytes: number;
  /** Bytes an exact all-reduce of every gradient would have handed over (f32). */
  readonly allreduceBytesUncompressed: number;
  /**
   * True when the approximation came out non-finite (a NaN or Inf in some rank's gradient): the gradients are then not
   * finite either (the loop skips the update, as for any non-finite gradient), and the error buffers and warm starts
   * were reset so that the next update starts clean. Every rank decides alike (it depends on reduced values only).
   */
  readonly reset: boolean;
}

export interface PowerSgdOptions {
  /** r: columns of P and Q (train.powersgd_rank). */
  readonly rank: number;
  readonly collective: Collective;
  /** Seeds Q's start; must be the same on every rank (the run's seed). */
  readonly seed: number | bigint;
  /** Compress a matrix only when n m > minCompressionRatio * r (n + m) (default 1: whenever it saves bytes). */
  readonly minCompressionRatio?: number;
}

/** Below this a column's norm counts as zero: x / (norm + TINY) leaves a zero column zero instead of NaN. */
const TINY = 1e-30;

interface Member {
  readonly name: string;
  readonly param: Tensor;
  /** This member's (n, m) slice of the group's error, in the parameter's shape (a view: not a copy). */
  readonly error: Tensor;
  /** This member's (m, r) slice of the group's warm start (a view). */
  readonly q: Tensor;
}

/** Compressed matrices of one shape (n x m), computed as one batch of B. */
interface Group {
  readonly rows: number;
  readonly cols: number;
  readonly members: Member[];
  /** (B, n, m): M - M_hat of this rank, added to the next update's gradient. Holds M during an update. */
  readonly error: Tensor;
  /** (B, m, r): the warm start, the same on every rank. */
  readonly q: Tensor;
  /** (B, m, r): the seeded start, which refills any column of Q that came out zero (see warmStart). */
  readonly qStart: Tensor;
}

export class PowerSgd {
  readonly rank: number;
  /** Bytes one update hands to all-reduces, and what an exact all-reduce would (both f32, fixed by the shapes). */
  readonly bytesPerUpdate: number;
  readonly bytesPerUpdateUncompressed: number;
  private readonly collective: Collective;
  private readonly groups: Group[] = [];
  private readonly uncompressed: Array<{ name: string; param: Tensor }> = [];
  private readonly params: Array<{ name: string; param: Tensor }>;
  private disposed = false;

  constructor(params: ReadonlyArray<readonly [string, Tensor]>, options: PowerSgdOptions) {
    const minRatio = options.minCompressionRatio ?? 1;
    checkPowerSgdOptions(options.rank, minRatio);
    this.rank = options.rank;
    this.collective = options.collective;
    this.params = params.map(([name, param]) => ({ name, param }));
    const device = params[0]?.[1].device;
    const seen = new Set<string | Tensor>();
    for (const [name, param] of params) {
      if (seen.has(name) || seen.has(param)) throw new Error(`dalle: PowerSGD: parameter '${name}' is listed twice`);
      seen.add(name).add(param);
      if (param.device !== device) {
        throw new Error(`dalle: PowerSGD: parameter '${name}' is on ${param.device}, the others on ${device}: one device per rank`);
      }
    }
    const r = this.rank;
    const byShape = new Map<string, Array<{ name: string; param: Tensor; index: number }>>();
    params.forEach(([name, param], index) => {
      const view = matrixView(param.shape);
      if (!view || !compressionPays(param.shape, r, minRatio)) {
        this.uncompressed.push({ name, param });
        return;
      }
      const key = `${view.rows}x${view.cols}`;
      if (!byShape.has(key)) byShape.set(key, []);
      byShape.get(key)!.push({ name, param, index });
    });
    const root = new Philox(BigInt(options.seed));
    for (const list of byShape.values()) {
      const { rows: n, cols: m } = matrixView(list[0].param.shape)!;
      const B = list.length;
      const error = keep(Tensor.zeros([B, n, m], 'f32', device));
      const q = keep(Tensor.empty([B, m, r], 'f32', device));
      const qStart = keep(Tensor.empty([B, m, r], 'f32', device));
      const members = list.map(({ name, param, index }, b) => {
        // Q's start: normal values from a stream of the parameter's index, identical on every rank with one seed.
        const start = randNormal(root.fork(index), [m, r], 0, 1, device);
        qStart.backend.memcpy(qStart.address + 4 * b * m * r, start.address, 4 * m * r);
        start.dispose();
        return {
          name,
          param,
          error: keep(error.viewAs(param.shape, contiguousStrides(param.shape), b * n * m)),
          q: keep(q.viewAs([m, r], [r, 1], b * m * r)),
        };
      });
      q.backend.memcpy(q.address, qStart.address, 4 * B * m * r);
      this.groups.push({ rows: n, cols: m, members, error, q, qStart });
    }
    const compressedValues = this.groups.reduce((a, g) => a + g.members.length * r * (g.rows + g.cols), 0);
    const restValues = this.uncompressed.reduce((a, p) => a + p.param.size, 0);
    this.bytesPerUpdate = 4 * (compressedValues + restValues);
    this.bytesPerUpdateUncompressed = 4 * this.params.reduce((a, p) => a + p.param.size, 0);
  }

  /** Names of the parameters whose gradients are compressed (the others are all-reduced as they are). */
  get compressedNames(): string[] {
    return this.groups.flatMap((g) => g.members.map((mb) => mb.name));
  }

  /**
   * Replaces every parameter's .grad by the mean over ranks of its compressed gradient (the exact mean for the ones
   * not compressed). A parameter without a gradient counts as a zero gradient (so every rank sends the same buffers)
   * and gets one. Every rank must call it once per update, in step.
   */
  async reduce(): Promise<ReduceReport> {
    if (this.disposed) throw new Error('dalle: PowerSGD: reduce() after dispose()');
    const grads = this.gradients();
    const N = this.collective.worldSize;
    const held: Tensor[] = []; // what must outlive a synchronous phase: kept, disposed at the end
    const hold = <T extends Tensor[]>(ts: T): T => {
      for (const t of ts) held.push(keep(t));
      return ts;
    };
    const restGrads = this.uncompressed.map((p) => grads.get(p.param)!);
    const restDone = restGrads.length > 0 ? this.collective.allReduceBuffers(restGrads.map(bufferOf), 'sum') : undefined;
    try {
      // M = grad + error, kept in the error buffer; P^T = Q^T M^T, (B, r, n).
      const pts = hold(noGrad(() => tidy(() => this.groups.map((g) => {
        for (const mb of g.members) addInPlace(mb.error, grads.get(mb.param)!);
        return matmul(g.q, g.error, { transA: true, transB: true });
      }))));
      if (pts.length > 0) await this.collective.allReduceBuffers(pts.map(bufferOf), 'sum');
      // P = orthonormal(mean P); Q = M^T P, (B, m, r).
      const [pHats, qs] = noGrad(() => tidy(() => {
        const p: Tensor[] = [];
        const q: Tensor[] = [];
        this.groups.forEach((g, i) => {
          if (N > 1) scaleInPlace(pts[i], 1 / N);
          p.push(orthonormalizeRows(pts[i]));
          q.push(matmul(g.error, p[i], { transA: true, transB: true }));
        });
        return [p, q];
      }));
      hold(pHats);
      hold(qs);
      if (qs.length > 0) await this.collective.allReduceBuffers(qs.map(bufferOf), 'sum');
      const reset = noGrad(() => tidy(() => this.applyApproximations(pHats, qs, grads, N)));
      if (restDone) await restDone;
      if (N > 1) for (const g of restGrads) scaleInPlace(g, 1 / N);
      return { allreduceBytes: this.bytesPerUpdate, allreduceBytesUncompressed: this.bytesPerUpdateUncompressed, reset };
    } finally {
      // An all-reduce that failed leaves the others pending on a broken group: wait for them before freeing buffers.
      if (restDone) await restDone.catch(() => undefined);
      for (const t of held) t.dispose();
    }
  }

  /**
   * M_hat = P Q^T, one matrix at a time (a transient of one gradient, not of a group): error = M - M_hat,
   * grad = M_hat; Q is kept for the next update. Returns true if the factors were not finite and the state was reset.
   */
  private applyApproximations(pHats: Tensor[], qs: Tensor[], grads: Map<Tensor, Tensor>, N: number): boolean {
    this.groups.forEach((g, i) => {
      if (N > 1) scaleInPlace(qs[i], 1 / N);
      const { rows: n, cols: m } = g;
      const r = this.rank;
      g.members.forEach((mb, b) => tidy(() => {
        const p = pHats[i].viewAs([r, n], [n, 1], pHats[i].offset + b * r * n);
        const q = qs[i].viewAs([m, r], [r, 1], qs[i].offset + b * m * r);
        const mHat = matmul(p, q, { transA: true, transB: true }); // (n, m)
        addInPlace(mb.error, mHat, -1);
        mHat.backend.memcpy(grads.get(mb.param)!.address, mHat.address, 4 * n * m);
      }));
      const next = warmStart(qs[i], g.qStart);
      g.q.backend.memcpy(g.q.address, next.address, 4 * g.q.size);
    });
    // M_hat is finite when P (unit columns) and Q are: check the small factors (one read back for all of them).
    if (Number.isFinite(sumSquaresOf([...pHats, ...qs]))) return false;
    for (const g of this.groups) {
      g.error.backend.fill(g.error.address, g.error.size, 0, 'f32');
      g.q.backend.memcpy(g.q.address, g.qStart.address, 4 * g.q.size);
    }
    return true;
  }

  /** Every parameter's gradient, checked; a missing one is made (zeros). */
  private gradients(): Map<Tensor, Tensor> {
    const out = new Map<Tensor, Tensor>();
    for (const { name, param } of this.params) {
      if (!param.grad) param.grad = keep(Tensor.zeros(param.shape, 'f32', param.device));
      const g = param.grad;
      if (g.dtype !== 'f32' || !g.isContiguous() || g.size !== param.size || g.device !== param.device) {
        throw new Error(`dalle: PowerSGD: the gradient of '${name}' is ${g} on ${g.device}, ` +
          `expected a contiguous f32 tensor of ${shapeStr(param.shape)} on ${param.device}`);
      }
      out.set(param, g);
    }
    return out;
  }

  /**
   * This rank's state, for a checkpoint: `<name>.powersgd_error` (the parameter's shape) and `<name>.powersgd_q`
   * (m, r) of every compressed parameter. The error differs between ranks (each rank saves its own); Q does not.
   * The tensors belong to this object (do not dispose them).
   */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const g of this.groups) {
      for (const mb of g.members) {
        out.set(`${mb.name}.powersgd_error`, mb.error);
        out.set(`${mb.name}.powersgd_q`, mb.q);
      }
    }
    return out;
  }

  /** Restores what stateTensors() saved; `get` returns host data for a name, or undefined. */
  loadStateTensors(get: (name: string) => Float32Array | undefined): void {
    for (const [key, t] of this.stateTensors()) {
      const data = get(key);
      if (!data) throw new Error(`dalle: PowerSGD state has no '${key}' (was it saved with another rank or model?)`);
      if (data.length !== t.size) {
        throw new Error(`dalle: PowerSGD state '${key}' has ${data.length} values, ${shapeStr(t.shape)} needs ${t.size} ` +
          '(was train.powersgd_rank changed?)');
      }
      t.backend.copyIn(t.address, data);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const g of this.groups) {
      for (const mb of g.members) {
        mb.error.dispose();
        mb.q.dispose();
      }
      g.error.dispose();
      g.q.dispose();
      g.qStart.dispose();
    }
    this.groups.length = 0;
  }
}

function bufferOf(t: Tensor): DeviceBuffer {
  return { address: t.address, count: t.size };
}

/**
 * The rows of `rows` (..., k, n) made orthonormal in order (Gram-Schmidt: row i minus its projection on rows 0..i-1,
 * then scaled to norm 1), in f32 on the tensor's device. The projection is subtracted twice ("twice is enough",
 * Giraud et al. 2005): once leaves rounding noise of the size of eps * |row| along the earlier rows, which decides
 * everything when a row is (nearly) a combination of the earlier ones, as when the gradient's rank is below r; the
 * second pass makes the rows orthogonal to f32 precision, so P P^T stays a projection and a gradient of rank <= r is
 * reproduced exactly. A zero row stays zero (divided by norm + TINY, not by 0).
 */
export function orthonormalizeRows(rows: Tensor): Tensor {
  if (rows.rank < 2) throw new Error(`dalle: orthonormalizeRows takes (..., k, n), got ${shapeStr(rows.shape)}`);
  const k = rows.shape[rows.rank - 2];
  const n = rows.shape[rows.rank - 1];
  const lead = rows.shape.slice(0, -2);
  const batch = lead.reduce((a, b) => a * b, 1);
  const out = Tensor.empty(rows.shape, 'f32', rows.device);
  const whole = lead.map((d) => [0, d] as [number, number]);
  for (let i = 0; i < k; i++) {
    const done = tidy(() => {
      let v = slice(rows, [...whole, [i, i + 1]]); // (..., 1, n)
      if (i > 0) {
        const basis = slice(out, [...whole, [0, i]]); // (..., i, n): the rows made so far
        for (let pass = 0; pass < 2; pass++) {
          const coefficients = matmul(v, basis, { transB: true }); // (..., 1, i)
          v = sub(v, matmul(coefficients, basis));
        }
      }
      const norm = sqrt(sum(square(v), -1, true)); // (..., 1, 1)
      return div(v, addScalar(norm, TINY));
    });
    // Written into row i of every batch entry (stride k n between entries).
    out.backend.stridedCopy(out.address + 4 * i * n, done.address, 4, [batch, n], [k * n, 1], [n, 1]);
    done.dispose();
  }
  return out;
}

/**
 * The next update's Q: the reduced Q, except that a column that came out exactly zero (a zero gradient, or one
 * orthogonal to the warm start) takes the seeded start's column instead. Without this a zero column would stay zero
 * for good (P = M Q = 0), and that part of the gradient would pile up in the error buffer and never be sent.
 * norm / (norm + TINY) is exactly 1 in f32 for any norm above ~1e-23, and 0 for a zero column.
 */
function warmStart(q: Tensor, qStart: Tensor): Tensor {
  const norm = sqrt(sum(square(q), -2, true)); // (B, 1, r)
  const isZero = sub(1, div(norm, addScalar(norm, TINY)));
  return add(q, mul(isZero, qStart));
}
