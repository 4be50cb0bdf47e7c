// AdamW (Loshchilov & Hutter) with decoupled weight decay, fp32 moments and fp32 master weights: a parameter held in
// f16/bf16 is updated through an f32 copy and cast back after each step, so small updates are not lost to rounding.
// Weight decay is per group, so gains, biases and embeddings can be left undecayed (the prior's paper setting).
// Moments and masters live on the parameter's device, and the update runs on that device's backend.
import { backendKernel } from '../backend/backend';
import { Tensor, keep, shapeStr } from '../tensor';

type AdamWKernel = (
  n: number, param: number, grad: number, m: number, v: number, lr: number, beta1: number, beta2: number,
  eps: number, weightDecay: number, gradScale: number, step: number,
) => void;
/** The kernel an update calls (an engine kernel outside ops: runtime.ts lists it for a device). */
export const ADAMW_KERNELS = ['adamw'] as const;

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface ParamGroup {
  params: Array<{ name: string; tensor: Tensor }>;
  /** Overrides of the optimizer-wide options for this group (e.g. weightDecay: 0). */
  weightDecay?: number;
  lrScale?: number;
}

interface ParamState {
  name: string;
  param: Tensor;
  master: Tensor; // f32; the parameter itself when it is f32
  m: Tensor;
  v: Tensor;
  weightDecay: number;
  lrScale: number;
}

export class AdamW {
  readonly options: AdamWOptions;
  /** Updates taken so far (bias correction uses it; saved in checkpoints). */
  step = 0;
  private readonly states: ParamState[] = [];

  constructor(groups: ParamGroup[], options: AdamWOptions) {
    this.options = { ...options };
    const seen = new Set<string>();
    for (const group of groups) {
      for (const { name, tensor } of group.params) {
        if (seen.has(name)) throw new Error(`dalle: AdamW: parameter '${name}' is in two groups`);
        seen.add(name);
        if (!tensor.isContiguous()) throw new Error(`dalle: AdamW: parameter '${name}' must be contiguous`);
        let master = tensor;
        if (tensor.dtype !== 'f32') {
          if (tensor.dtype === 'i32') throw new Error(`dalle: AdamW: parameter '${name}' is an integer tensor`);
          master = keep(Tensor.empty(tensor.shape, 'f32', tensor.device));
          tensor.backend.cast(master.address, 'f32', tensor.address, tensor.dtype, tensor.size);
        }
        this.states.push({
          name,
          param: tensor,
          master,
          m: keep(Tensor.zeros(tensor.shape, 'f32', tensor.device)),
          v: keep(Tensor.zeros(tensor.shape, 'f32', tensor.device)),
          weightDecay: group.weightDecay ?? options.weightDecay,
          lrScale: group.lrScale ?? 1,
        });
      }
    }
  }

  get parameters(): Tensor[] {
    return this.states.map((s) => s.param);
  }

  /**
   * One update with learning rate `lr` (from a schedule). `gradScale` multiplies every gradient first (1/loss-scale,
   * or a clipping factor). Parameters without a gradient are skipped.
   */
  update(lr = this.options.lr, gradScale = 1): void {
    this.step++;
    const { beta1, beta2, eps } = this.options;
    for (const s of this.states) {
      const g = s.param.grad;
      if (!g) continue;
      if (g.size !== s.param.size || g.dtype !== 'f32') {
        throw new Error(`dalle: AdamW: gradient of '${s.name}' is ${g} for a parameter of shape ${shapeStr(s.param.shape)}`);
      }
      const backend = s.param.backend;
      backendKernel<AdamWKernel>(backend, 'adamw')(s.param.size, s.master.address, g.address, s.m.address, s.v.address, lr * s.lrScale, beta1, beta2,
        eps, s.weightDecay, gradScale, this.step);
      if (s.master !== s.param) backend.cast(s.param.address, s.param.dtype, s.master.address, 'f32', s.param.size);
    }
  }

  /** Tensors to checkpoint: `<name>.m`, `<name>.v` and, for 16-bit parameters, `<name>.master`. */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const s of this.states) {
      out.set(`${s.name}.m`, s.m);
      out.set(`${s.name}.v`, s.v);
      if (s.master !== s.param) out.set(`${s.name}.master`, s.master);
    }
    return out;
  }

  /** Restores moments (and masters) saved by stateTensors(); `get` returns host data for a name, or undefined. */
  loadStateTensors(step: number, get: (name: string) => Float32Array | undefined): void {
    for (const s of this.states) {
      for (const [key, t] of [['m', s.m], ['v', s.v], ...(s.master !== s.param ? [['master', s.master]] : [])] as Array<[string, Tensor]>) {
        const data = get(`${s.name}.${key}`);
        if (!data) throw new Error(`dalle: optimizer state has no '${s.name}.${key}' (was the checkpoint made by another model?)`);
        if (data.length !== t.size) {
          throw new Error(`dalle: optimizer state '${s.name}.${key}' has ${data.length} values, the parameter ${shapeStr(t.shape)} needs ${t.size}`);
        }
        t.backend.copyIn(t.address, data);
      }
      if (s.master !== s.param) s.param.backend.cast(s.param.address, s.param.dtype, s.master.address, 'f32', s.param.size);
    }
    this.step = step;
  }

  dispose(): void {
    for (const s of this.states) {
      s.m.dispose();
      s.v.dispose();
      if (s.master !== s.param) s.master.dispose();
    }
    this.states.length = 0;
  }
}
