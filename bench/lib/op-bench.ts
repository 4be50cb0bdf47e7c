// The op benchmark's engine (bench/ops.ts): enumerates the registry against the shape table (bench/ops-shapes.ts),
// times each case's forward and, where the op has a backward, forward+backward, and sets each time against its bound:
// max(bytes / bandwidth, FLOPs / FLOP peak), both peaks measured in the same run (bench/lib/machine-peaks.ts).
// Bytes: the forward's inputs read + output written at their dtypes (a case may say less, e.g. 0 for a view); the
// backward adds the output gradient read, each differentiable input read again (not for views) and its f32 gradient
// written, except where the input's gradient is the output gradient itself (add's, a view's). FLOPs: the case's
// count; forward+backward 3x the forward unless the case says otherwise. Forward+backward is the op's forward and its
// backward function on one output gradient (not autograd's tape around them).
import { applyOp, isFloat, itemBytes, noGrad, OpDef, Tensor, tidy } from '../../src/core/tensor';
import { BenchCase, BenchDims, BenchModel } from '../ops-shapes';
import { callKey, OpCalls } from './op-calls';

export type Pass = 'fwd' | 'fwd+bwd';

export interface OpBenchRow {
  op: string;
  /** 'ok'; 'no shapes' (the op is registered but bench/ops-shapes.ts has no entry); 'error' (the case threw). */
  status: 'ok' | 'no shapes' | 'error';
  model: BenchModel | null;
  case: string;
  pass: Pass | null;
  error?: string;
  /** Median milliseconds per call. */
  ms: number;
  reps: number;
  bytes: number;
  flops: number;
  /** Achieved: bytes / time, FLOPs / time. */
  gbPerS: number;
  gflopPerS: number;
  /** max(bytes / bandwidth, FLOPs / peak) in ms, and which term it is ('-' when both are 0). */
  boundMs: number;
  boundBy: 'memory' | 'compute' | '-';
  /** boundMs / ms: 1 = at the bound; null when the bound is 0 (pure overhead, e.g. a view). */
  fraction: number | null;
  /** How many times one training step of `model` runs this exact call (inputs and attributes), or null if not counted.
   *  For 'fwd' rows: forward calls without a backward; for 'fwd+bwd' rows: calls with one. */
  callsPerStep: number | null;
  /** ms x callsPerStep (null when not counted). */
  stepMs: number | null;
}

export interface Peaks {
  /** bytes per second */
  bandwidth: number;
  /** FLOP per second, f32 and bf16 */
  flopsF32: number;
  flopsBf16: number;
}

export interface TimingOptions {
  /** Time to spend per measurement (after warm-up), in ms; repetitions = that / one call, within [minReps, maxReps]. */
  targetMs: number;
  minReps: number;
  maxReps: number;
  warmup: number;
}

export const FULL_TIMING: TimingOptions = { targetMs: 300, minReps: 5, maxReps: 200, warmup: 2 };
export const QUICK_TIMING: TimingOptions = { targetMs: 5, minReps: 1, maxReps: 3, warmup: 1 };

/** Deterministic input values (a fixed LCG: the benchmark must not depend on a seed's luck, only be repeatable). */
function inputValues(spec: BenchCase['inputs'][number], n: number, salt: number): Float32Array | Int32Array {
  let s = (0x9e3779b9 ^ (salt * 0x85ebca6b)) >>> 0;
  const next = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  if (spec.kind === 'int') {
    const lo = spec.low ?? 0, hi = spec.high ?? 10;
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = lo + Math.floor(next() * (hi - lo));
    return out;
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = next();
    // 'normal' as a sum of uniforms (mean 0, variance 1): close enough for timing, and cheap for 4M elements
    out[i] = spec.kind === 'positive' ? 0.5 + 1.5 * u : spec.kind === 'uniform' ? 2 * u - 1 : (u + next() + next() - 1.5) * 2;
  }
  return out;
}

function makeInputs(c: BenchCase): Tensor[] {
  const fresh = c.inputs.map((spec, i) => {
    const dtype = spec.dtype ?? (spec.kind === 'int' ? 'i32' : 'f32');
    const n = spec.shape.reduce((a, b) => a * b, 1);
    return Tensor.from(inputValues(spec, n, i + 1), spec.shape, dtype);
  });
  return c.prepare ? noGrad(() => c.prepare!(fresh)) : fresh;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median ms of fn over repetitions, after warm-up; the repetitions fill about targetMs. */
function timeMedian(fn: () => void, t: TimingOptions): { ms: number; reps: number } {
  let warmMs = 0;
  for (let i = 0; i < t.warmup; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    warmMs = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  const reps = Math.max(t.minReps, Math.min(t.maxReps, Math.ceil(t.targetMs / Math.max(warmMs, 1e-3))));
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: median(times), reps };
}

const sizeOf = (t: { shape: readonly number[] }): number => t.shape.reduce((a, b) => a * b, 1);

interface Measured { ms: number; reps: number; bytes: number; flops: number; key: string; bf16: boolean }

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function measureCase(def: OpDef<any>, c: BenchCase, pass: Pass, t: TimingOptions): Measured {
  const inputs = makeInputs(c);
  const key = callKey(inputs, c.attrs);
  const differentiable = inputs.map((x, i) => pass === 'fwd+bwd' && isFloat(x.dtype) && c.inputs[i].grad !== false);
  const inBytes = inputs.reduce((s, x) => s + sizeOf(x) * itemBytes(x.dtype), 0);
  let grad: Tensor | null = null;
  try {
    inputs.forEach((x, i) => (x.requiresGrad = differentiable[i]));
    // One call to learn the output's size and dtype (and the backward's incoming gradient).
    const out = tidy(() => {
      const y = applyOp(def, inputs, c.attrs);
      return { size: y.size, dtype: y.dtype, shape: [...y.shape] };
    });
    const fwdBytes = c.bytes ?? inBytes + out.size * itemBytes(out.dtype);
    let bytes = fwdBytes;
    let flops = c.flops;
    let fn: () => void;
    if (pass === 'fwd') {
      fn = () => tidy(() => void applyOp(def, inputs, c.attrs));
    } else {
      const isView = c.bytes === 0;
      flops = c.trainFlops ?? 3 * c.flops;
      grad = Tensor.from(inputValues({ shape: out.shape }, out.size, 99), out.shape, 'f32');
      const g = grad;
      // Which input gradients are the output gradient itself (add's, a view's): those move nothing.
      const passedOn = tidy(() => {
        const y = applyOp(def, inputs, c.attrs);
        return (y.gradFn?.backward(g) ?? []).map((gx) => gx !== null && gx.storage === g.storage);
      });
      const computed = inputs.map((_, i) => differentiable[i] && !passedOn[i]);
      if (computed.some((b) => b)) bytes += out.size * 4;
      inputs.forEach((x, i) => {
        if (computed[i]) bytes += sizeOf(x) * 4 + (isView ? 0 : sizeOf(x) * itemBytes(x.dtype));
      });
      // The op's own backward, called directly: autograd's copies and the accumulation into leaves' .grad are the
      // tape's cost, not the op's (the inputs here are leaves; in a step they are mostly intermediate tensors).
      fn = () => tidy(() => {
        const y = applyOp(def, inputs, c.attrs);
        if (!y.gradFn) throw new Error(`${def.name} recorded no backward (no input requires a gradient)`);
        y.gradFn.backward(g);
      });
    }
    const { ms, reps } = timeMedian(fn, t);
    return { ms, reps, bytes, flops, key, bf16: inputs.some((x) => x.dtype === 'bf16') };
  } finally {
    for (const x of inputs) {
      if (x.grad) x.grad.dispose();
      x.grad = null;
      x.dispose();
    }
    (grad as Tensor | null)?.dispose();
  }
}

/** The calls per step for a case's key: forward-only calls for 'fwd', calls with a backward for 'fwd+bwd'. */
function callsFor(counts: Map<BenchModel, OpCalls> | null, model: BenchModel, op: string, key: string, pass: Pass, hasBackward: boolean): number | null {
  const calls = counts?.get(model);
  if (!calls) return null;
  const fwd = calls.forward.get(op)?.get(key) ?? 0;
  const bwd = calls.backward.get(op)?.get(key) ?? 0;
  if (pass === 'fwd+bwd') return bwd;
  return hasBackward ? fwd - bwd : fwd;
}

function row(op: string, partial: Partial<OpBenchRow>): OpBenchRow {
  return {
    op, status: 'ok', model: null, case: '', pass: null, ms: NaN, reps: 0, bytes: 0, flops: 0, gbPerS: NaN, gflopPerS: NaN,
    boundMs: NaN, boundBy: '-', fraction: null, callsPerStep: null, stepMs: null, ...partial,
  };
}

export interface BenchOpsOptions {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ops: readonly OpDef<any>[];
  shapes: Record<string, (d: BenchDims) => BenchCase[]>;
  dims: BenchDims;
  peaks: Peaks;
  timing: TimingOptions;
  /** Op calls of one training step per model (bench/lib/op-calls.ts), or null to leave calls per step blank. */
  counts: Map<BenchModel, OpCalls> | null;
  /** Told before each measurement (progress on stderr). */
  onCase?: (op: string, name: string, pass: Pass) => void;
}

/** One row per (op, case, pass); one 'no shapes' row per registered op without an entry in the shape table. */
export function benchOps(o: BenchOpsOptions): OpBenchRow[] {
  const rows: OpBenchRow[] = [];
  for (const def of o.ops) {
    const shapes = o.shapes[def.name];
    if (!shapes) {
      rows.push(row(def.name, { status: 'no shapes', case: 'no shapes: add it to bench/ops-shapes.ts' }));
      continue;
    }
    for (const c of shapes(o.dims)) {
      const passes: Pass[] = def.backward ? ['fwd', 'fwd+bwd'] : ['fwd'];
      for (const pass of passes) {
        o.onCase?.(def.name, c.name, pass);
        try {
          const m = measureCase(def, c, pass, o.timing);
          const peak = m.bf16 ? o.peaks.flopsBf16 : o.peaks.flopsF32;
          const memMs = (m.bytes / o.peaks.bandwidth) * 1e3, flopMs = (m.flops / peak) * 1e3;
          const boundMs = Math.max(memMs, flopMs);
          const callsPerStep = callsFor(o.counts, c.model, def.name, m.key, pass, !!def.backward);
          rows.push(row(def.name, {
            model: c.model, case: c.name, pass, ms: m.ms, reps: m.reps, bytes: m.bytes, flops: m.flops,
            gbPerS: m.bytes / m.ms / 1e6, gflopPerS: m.flops / m.ms / 1e6, boundMs,
            boundBy: boundMs === 0 ? '-' : flopMs > memMs ? 'compute' : 'memory',
            fraction: boundMs > 0 ? boundMs / m.ms : null, callsPerStep,
            stepMs: callsPerStep === null ? null : callsPerStep * m.ms,
          }));
        } catch (e) {
          rows.push(row(def.name, { status: 'error', model: c.model, case: c.name, pass, error: (e as Error).message }));
        }
      }
    }
  }
  return rows;
}

/** Largest step time first (ms x calls per step), then rows not run in a step by their own time; errors and ops
 *  without shapes last. */
export function sortByTimeShare(rows: readonly OpBenchRow[]): OpBenchRow[] {
  const rank = (r: OpBenchRow): number => (r.status !== 'ok' ? 2 : r.stepMs ? 0 : 1);
  return [...rows].sort((a, b) => rank(a) - rank(b) || (b.stepMs ?? 0) - (a.stepMs ?? 0) || (b.ms || 0) - (a.ms || 0));
}

/** The `n` rows furthest from their bound (lowest fraction), among the cases a counted step runs when there are
 *  counts, else among all measured cases with a bound. */
export function furthestFromBound(rows: readonly OpBenchRow[], n: number): OpBenchRow[] {
  const measured = rows.filter((r) => r.status === 'ok' && r.fraction !== null);
  const inStep = measured.filter((r) => (r.callsPerStep ?? 0) > 0);
  return [...(inStep.length ? inStep : measured)].sort((a, b) => a.fraction! - b.fraction!).slice(0, n);
}

const fix = (x: number, d: number): string => (Number.isFinite(x) ? x.toFixed(d) : '-');
const ms = (x: number): string => (!Number.isFinite(x) ? '-' : x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toFixed(4));

/** The markdown table: op, case, model, pass, calls/step, ms, ms/step, achieved, bound ms, bound by, fraction. */
export function markdownTable(rows: readonly OpBenchRow[]): string {
  const head = ['op', 'case', 'model', 'pass', 'calls/step', 'ms', 'ms/step', 'achieved', 'bound ms', 'bound', 'fraction of bound'];
  const lines = [`| ${head.join(' | ')} |`, `| ${head.map((_, i) => (i < 4 ? '---' : '---:')).join(' | ')} |`];
  for (const r of rows) {
    if (r.status !== 'ok') {
      lines.push(`| ${r.op} | ${r.status === 'error' ? `error: ${r.error?.split('\n')[0]}` : r.case} | ${r.model ?? '-'} | ${r.pass ?? '-'} | - | - | - | - | - | - | - |`);
      continue;
    }
    const achieved = r.boundBy === 'compute' ? `${fix(r.gflopPerS, 1)} GFLOP/s` : `${fix(r.gbPerS, 1)} GB/s`;
    lines.push(`| ${[r.op, r.case, r.model, r.pass, r.callsPerStep ?? '-', ms(r.ms), r.stepMs === null ? '-' : r.stepMs === 0 ? '0' : ms(r.stepMs),
      achieved, ms(r.boundMs), r.boundBy, r.fraction === null ? '-' : fix(r.fraction, 2)].join(' | ')} |`);
  }
  return lines.join('\n');
}
