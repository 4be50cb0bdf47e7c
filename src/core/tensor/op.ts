// The op registry. An op is one object with everything it needs: a forward on the backend's kernels, a backward made
// of other ops, a plain float64 reference, and the cases the shared harness (test/ops.test.ts) checks it on.
// The harness iterates this registry, so an op cannot be registered without a reference and test cases.
import { isGradEnabled, noGrad } from './autograd';
import { DType } from './dtype';
import { RefTensor } from './reference';
import { Tensor, shapeStr } from './tensor';

/** How the harness fills an input: normal(0,1), uniform(-1,1), positive (0.5..2), int [low, high), or given values. */
export type InputKind = 'normal' | 'uniform' | 'positive' | 'int';

export interface InputSpec {
  shape: number[];
  dtype?: DType; // default f32
  kind?: InputKind; // default normal; int inputs default to dtype i32
  low?: number; // int: inclusive lower bound (default 0)
  high?: number; // int: exclusive upper bound
  /** Gradient checked for this input (default: true for float inputs of differentiable ops). */
  grad?: boolean;
}

export interface Tolerance {
  rtol: number;
  atol: number;
}

export interface OpCase<A> {
  name?: string;
  inputs: InputSpec[];
  attrs: A;
  tol?: Partial<Tolerance>;
  /** Gradient check: 'full' = every element by central differences (tiny cases only), 'directional' = along random
   *  directions (any size), 'none' (non-differentiable inputs only, or the op has no backward). Default directional. */
  gradcheck?: 'full' | 'directional' | 'none';
}

export interface ForwardContext {
  /** Keeps a tensor for the backward pass (it lives as long as the scope that ran the forward). */
  save(name: string, t: Tensor): void;
}

export interface BackwardContext<A> {
  readonly inputs: readonly Tensor[];
  readonly output: Tensor;
  readonly attrs: A;
  saved(name: string): Tensor;
}

export interface OpDef<A = Record<string, never>> {
  readonly name: string;
  /** Computes the output (gradients are never recorded inside). Inputs may be strided views. */
  forward(inputs: readonly Tensor[], attrs: A, ctx: ForwardContext): Tensor;
  /** One gradient per input (null where none), built from ops. Absent: the op is not differentiable. */
  backward?(ctx: BackwardContext<A>, gradOutput: Tensor): (Tensor | null)[];
  /** Plain float64 implementation that the fast forward is checked against. */
  reference(inputs: RefTensor[], attrs: A): RefTensor;
  /** Harness cases: odd sizes (1, 7, 33, 129 and larger) and every attribute combination that matters. */
  cases(): OpCase<A>[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const registry = new Map<string, OpDef<any>>();

export function defineOp<A>(def: OpDef<A>): OpDef<A> {
  if (registry.has(def.name)) throw new Error(`dalle: op '${def.name}' is registered twice`);
  if (typeof def.reference !== 'function' || typeof def.cases !== 'function') {
    throw new Error(`dalle: op '${def.name}' needs a reference and harness cases`);
  }
  registry.set(def.name, def);
  return def;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registeredOps(): OpDef<any>[] {
  return [...registry.values()];
}

/** Runs an op, recording it on the autograd tape when gradients are on and an input requires them. */
export function applyOp<A>(def: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor {
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    if (!(t instanceof Tensor)) throw new Error(`dalle: ${def.name}: input ${i} is not a Tensor`);
    if (t.disposed) {
      throw new Error(`dalle: ${def.name}: input ${i} ${shapeStr(t.shape)} was already disposed`);
    }
  }
  const saved = new Map<string, Tensor>();
  const out = noGrad(() => def.forward(inputs, attrs, { save: (k, t) => void saved.set(k, t) }));
  if (def.backward && isGradEnabled() && inputs.some((t) => t.requiresGrad)) {
    const backwardFn = def.backward;
    const ctx: BackwardContext<A> = {
      inputs,
      output: out,
      attrs,
      saved(name: string): Tensor {
        const t = saved.get(name);
        if (!t) throw new Error(`dalle: ${def.name}: backward needs '${name}', which forward did not save`);
        return t;
      },
    };
    out.requiresGrad = true;
    out.gradFn = { op: def.name, inputs, backward: (g) => backwardFn(ctx, g) };
  }
  return out;
}
