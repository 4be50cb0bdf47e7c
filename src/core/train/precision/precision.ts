/**
 * Mixed precision as an object: the training loop calls the same methods whatever the
 * precision, and fp32 does nothing in them.
 *
 *   const precision = createPrecision(config.runtime.precision, { gradScale: config.train.grad_scale });
 *   precision.attach(resblocks);           // the modules of each resblock, in order (prior: precision/prior.ts)
 *   model.residual = precision;            // the model's blocks compute x + f(x) as precision.resblock(r, x, f)
 *   precision.attachOptimizer(model.namedParameters(), optimizer.stateTensors());
 *   ... loss, backward(loss);
 *   const finite = precision.unscaleGradients();   // before clipping: the gradients are in true units afterwards
 *   if (finite) optimizer.update(lr);
 *   precision.endStep();                   // scales grow after a clean update, back off where a resblock overflowed
 *   metrics line: { ...precision.metrics() }; checkpoint: precision.state(); resume: precision.load(state)
 *
 * fp16 (the paper's scheme, Ramesh et al. 2021 Appendix B.2), emulated on the CPU exactly: every value the GPU would
 * hold in fp16 is rounded to fp16 (roundF16, ops/precision.ts), and its gradient too. Inside each resblock: the
 * weights of the linear layers (an fp16 copy of the fp32 master weight, made at each forward: the optimizer keeps
 * updating the fp32 parameter), their inputs and outputs, and so the gradients of all of these; and the Adam moments
 * of those weight matrices, in bf16 (attachOptimizer; fp16's range cannot hold second moments). In fp32: 1-D
 * parameters (layer-norm gains and biases, linear biases), the embeddings and the unembedding (everything outside the
 * resblocks) with their moments, the residual stream and its gradient, and the master weights.
 * Each resblock r has its own gradient scale s_r (grad-scaler.ts): the resblock computes x + enter(f(leave(x))), whose
 * backward multiplies the gradient entering the resblock by s_r and divides the gradient leaving it by s_r, setting
 * Inf/NaN there to zero (so an overflow in one resblock stays in it) and flagging the resblock. The gradients of the
 * resblock's parameters come out multiplied by s_r: unscaleGradients() divides them by s_r and flags the resblock if any
 * is non-finite. A flagged resblock skips the update and backs off its scale; the others keep theirs.
 * With `perResblock: false` one scale serves every resblock: the classic global loss scale with an fp32 residual
 * stream (for comparison: test/train/precision.test.ts shows where it underflows).
 *
 * bf16: the same rounding points with bf16 (fp32's range, so no scaling): resblock(r, x, f) = x + f(x).
 */
import { Module } from '../../nn/module';
import { Linear } from '../../nn/layers';
import { add, gradScaleEnter, gradScaleLeave, matmul, reshape, roundFloat, scaleFilterInPlace } from '../../ops';
import { Tensor } from '../../tensor';
import { GradScaleRules, GradScaler, GradScalerState, PAPER_GRAD_SCALE } from './grad-scaler';

export type PrecisionKind = 'fp32' | 'bf16' | 'fp16';

/** What a model's blocks call for each residual branch: returns x + f(x), with whatever the precision adds. */
export interface ResidualHook {
  resblock(r: number, x: Tensor, f: (x: Tensor) => Tensor): Tensor;
}

/** Adds a branch to the residual stream, nothing else (fp32, and a model's default). */
export const plainResidual: ResidualHook = {
  resblock(_r, x, f) {
    return add(x, f(x));
  },
};

export interface PrecisionState {
  kind: PrecisionKind;
  grad_scaler?: GradScalerState;
}

export interface Precision extends ResidualHook {
  readonly kind: PrecisionKind;
  /** The modules of each resblock (index r = the r passed to resblock()); call once, before training. */
  attach(resblocks: ReadonlyArray<readonly Module[]>): void;
  /**
   * The optimizer's state (AdamW.stateTensors()) and the model's named parameters: fp16/bf16 keep the Adam moments
   * of the resblocks' weight matrices in 16 bits (bf16, rounded after each update); fp32 ignores it.
   */
  attachOptimizer(named: ReadonlyArray<readonly [string, Tensor]>, state: ReadonlyMap<string, Tensor>): void;
  /** Restores the modules attach() changed (tests reuse a model in another precision). */
  detach(): void;
  /**
   * After backward: brings the gradients of scaled resblocks back to true units, zeroes non-finite values and flags
   * their resblocks. Returns whether the update may be taken (every resblock finite). Data-parallel: `agree` takes
   * the largest of each resblock's flag count over the ranks in place (GradScaler.agree), so all ranks decide alike.
   */
  unscaleGradients(agree?: (counts: Float64Array) => void): boolean;
  /** After the update (or its skip): adjusts the gradient scales. */
  endStep(): void;
  /**
   * Fields for the metrics line after a step: grad_scales (one per resblock: the scales that step ran with) and
   * skipped (updates skipped so far, that step included); none in fp32/bf16.
   */
  metrics(): { grad_scales?: number[]; skipped?: number };
  /** For checkpoints (state.json). */
  state(): PrecisionState;
  load(state: PrecisionState | undefined): void;
}

export interface PrecisionOptions {
  /** The scale rules (config train.grad_scale); default the paper's. */
  gradScale?: GradScaleRules;
  /** Data-parallel workers M (scales start at init * M, clamp to [min * M, max * M]). Default 1. */
  workers?: number;
  /** fp16: one scale per resblock (default) or one for all (a global loss scale, for comparison). */
  perResblock?: boolean;
}

/** fp32: the reference; every method is a no-op. */
export class Fp32Precision implements Precision {
  readonly kind = 'fp32' as const;
  resblock(r: number, x: Tensor, f: (x: Tensor) => Tensor): Tensor {
    return plainResidual.resblock(r, x, f);
  }
  attach(): void {}
  attachOptimizer(): void {}
  detach(): void {}
  unscaleGradients(): boolean {
    return true;
  }
  endStep(): void {}
  metrics(): Record<string, never> {
    return {};
  }
  state(): PrecisionState {
    return { kind: 'fp32' };
  }
  /** A run may resume in another precision (fp16 -> fp32 to debug, say): saved scales are then not used. */
  load(): void {}
}

/** Rounds an f32 tensor's values to `dtype` in place (through a 16-bit copy). */
function roundInPlace(t: Tensor, dtype: 'f16' | 'bf16'): void {
  const half = Tensor.empty(t.shape, dtype, t.device);
  t.backend.cast(half.address, dtype, t.address, 'f32', t.size);
  t.backend.cast(t.address, 'f32', half.address, dtype, t.size);
  half.dispose();
}

/** Every Linear in these modules (walking their fields and children), each once. */
function linearsIn(modules: readonly Module[]): Linear[] {
  const out: Linear[] = [];
  const seen = new Set<unknown>();
  const visit = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (v instanceof Linear) {
      out.push(v);
      return;
    }
    if (v instanceof Module) {
      for (const child of Object.values(v)) visit(child);
    } else if (v instanceof Map) {
      for (const child of v.values()) visit(child);
    }
  };
  for (const m of modules) visit(m);
  return out;
}

/** fp16 (scaled) or bf16 (unscaled) rounding, emulated on the CPU. */
export class HalfPrecision implements Precision {
  readonly kind: 'fp16' | 'bf16';
  private readonly dtype: 'f16' | 'bf16';
  private readonly rules: GradScaleRules;
  private readonly workers: number;
  private readonly perResblock: boolean;
  private scalerRef: GradScaler | null = null;
  /** The scales the last step's backward ran with (metrics), and the skipped count after it. */
  private lastScales: number[] = [];
  private params: Tensor[][] = [];
  private readonly patched = new Map<Linear, Linear['forward']>();
  /** Adam moments kept in 16 bits (bf16): those of the resblocks' weight matrices. */
  private moments: Tensor[] = [];

  constructor(kind: 'fp16' | 'bf16', options: PrecisionOptions = {}) {
    this.kind = kind;
    this.dtype = kind === 'fp16' ? 'f16' : 'bf16';
    this.rules = options.gradScale ?? PAPER_GRAD_SCALE;
    this.workers = options.workers ?? 1;
    this.perResblock = options.perResblock ?? true;
  }

  /** fp16: the gradient scales (after attach()). */
  get scaler(): GradScaler {
    if (!this.scalerRef) throw new Error(`dalle: ${this.kind} precision: attach(resblocks) first`);
    return this.scalerRef;
  }

  get resblocks(): number {
    return this.params.length;
  }

  /** The scale slot of resblock r (all share slot 0 with perResblock false). */
  private slot(r: number): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.params.length) {
      throw new RangeError(`dalle: ${this.kind} precision: resblock ${r} is not one of the ${this.params.length} attached`);
    }
    return this.perResblock ? r : 0;
  }

  attach(resblocks: ReadonlyArray<readonly Module[]>): void {
    if (this.params.length > 0) throw new Error(`dalle: ${this.kind} precision is already attached to a model`);
    if (resblocks.length === 0) throw new Error(`dalle: ${this.kind} precision: the model has no resblocks to attach to`);
    const owner = new Map<Tensor, number>();
    this.params = resblocks.map((mods, r) => {
      const list: Tensor[] = [];
      for (const m of mods) {
        for (const [name, t] of m.namedParameters()) {
          const prev = owner.get(t);
          if (prev !== undefined && prev !== r) throw new Error(`dalle: ${this.kind} precision: parameter '${name}' is in resblocks ${prev} and ${r}`);
          if (prev === undefined) list.push(t);
          owner.set(t, r);
        }
      }
      return list;
    });
    const round = (t: Tensor): Tensor => roundFloat(t, this.dtype);
    for (const lin of linearsIn(resblocks.flat())) {
      const original = lin.forward;
      this.patched.set(lin, original);
      // y = round(round(x) @ round(W)^T + b): 16-bit input, weight and output; fp32 bias (a 1-D parameter).
      lin.forward = (x: Tensor): Tensor => {
        const y = matmul(round(x.rank === 1 ? reshape(x, [1, -1]) : x), round(lin.weight), { transB: true });
        return round(lin.bias ? add(y, lin.bias) : y);
      };
    }
    if (this.kind === 'fp16') this.scalerRef = new GradScaler(this.perResblock ? resblocks.length : 1, this.rules, this.workers);
  }

  attachOptimizer(named: ReadonlyArray<readonly [string, Tensor]>, state: ReadonlyMap<string, Tensor>): void {
    const matrices = new Set([...this.patched.keys()].map((lin) => lin.weight));
    this.moments = [];
    for (const [name, t] of named) {
      if (!matrices.has(t)) continue;
      for (const key of [`${name}.m`, `${name}.v`]) {
        const m = state.get(key);
        if (!m) throw new Error(`dalle: ${this.kind} precision: the optimizer has no '${key}'`);
        this.moments.push(m);
      }
    }
  }

  detach(): void {
    for (const [lin, original] of this.patched) lin.forward = original;
    this.patched.clear();
    this.moments = [];
    this.params = [];
    this.scalerRef = null;
  }

  resblock(r: number, x: Tensor, f: (x: Tensor) => Tensor): Tensor {
    const slot = this.slot(r);
    if (this.kind === 'bf16') return add(x, f(x));
    const scaler = this.scaler;
    const s = scaler.scale(slot);
    const inner = gradScaleLeave(x, s, (count) => scaler.flag(slot, count));
    return add(x, gradScaleEnter(f(inner), s));
  }

  unscaleGradients(agree?: (counts: Float64Array) => void): boolean {
    if (this.kind === 'bf16') return true;
    const scaler = this.scaler;
    this.params.forEach((list, r) => {
      const slot = this.slot(r);
      const inv = 1 / scaler.scale(slot);
      for (const p of list) {
        if (!p.grad) continue;
        const bad = scaleFilterInPlace(p.grad, inv);
        if (bad > 0) scaler.flag(slot, bad);
      }
    });
    if (agree) scaler.agree(agree);
    return scaler.flagged().length === 0;
  }

  endStep(): void {
    // The moments in 16 bits: bf16, fp32's range, because fp16 cannot hold v = g^2 (a gradient of 1e-4 gives 1e-8,
    // below fp16's smallest subnormal 6e-8) nor small first moments. Rounded after the update, as a GPU storing them
    // in bf16 would. (Rounding unchanged moments of a skipped update is a no-op: they are already bf16 values.)
    for (const m of this.moments) roundInPlace(m, 'bf16');
    if (this.kind !== 'fp16') return;
    this.lastScales = [...this.scaler.scales];
    this.scaler.endStep();
  }

  /** grad_scales: the scales the last update's backward ran with (the first line shows init * M); skipped so far. */
  metrics(): { grad_scales?: number[]; skipped?: number } {
    if (this.kind === 'bf16') return {};
    return { grad_scales: [...this.lastScales], skipped: this.scaler.skipped };
  }

  state(): PrecisionState {
    return this.kind === 'fp16' ? { kind: this.kind, grad_scaler: this.scaler.state() } : { kind: this.kind };
  }

  load(state: PrecisionState | undefined): void {
    if (this.kind !== 'fp16') return;
    if (!state?.grad_scaler) {
      // A run started in fp32/bf16 resumes in fp16 with fresh scales (the paper's init).
      return;
    }
    this.scaler.load(state.grad_scaler);
  }
}

export function createPrecision(kind: PrecisionKind, options: PrecisionOptions = {}): Precision {
  switch (kind) {
    case 'fp32':
      return new Fp32Precision();
    case 'fp16':
    case 'bf16':
      return new HalfPrecision(kind, options);
    default:
      throw new Error(`dalle: unknown precision '${String(kind)}': use fp32, bf16 or fp16`);
  }
}
