// The op registry. An op is one object with everything it needs: a forward on the backend's kernels, a backward made
// of other ops, a plain float64 reference, and the cases the shared harness (test/ops.test.ts) checks it on.
// The harness iterates this registry, so an op cannot be registered without a reference and test cases.
// Backends: an op names the kernels it calls itself (`kernels`; ops it calls through applyOp name theirs), the same
// names on every backend. It runs on the device of its inputs (all on one, else an error naming both), and only where
// that backend has every one of its kernels (else an error naming the missing ones): never half on one device and
// half on another, and never silently on the CPU. Registration refuses an op the CPU backend cannot run.
import { Backend, missingKernels } from '../backend/backend';
import { cpuBackend } from '../backend/cpu';
import { opScope, inOpScope } from '../backend/registry';
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
  /** The backend kernels forward and backward look up by name (opKernel); [] for ops made of other ops or views. */
  readonly kernels: readonly string[];
  /** Computes the output (gradients are never recorded inside). Inputs may be strided views. */
  forward(inputs: readonly Tensor[], attrs: A, ctx: ForwardContext): Tensor;
  /** One gradient per input (null where none), built from ops. Absent: the op is not differentiable. */
  backward?(ctx: BackwardContext<A>, gradOutput: Tensor): (Tensor | null)[];
  /** Plain float64 implementation that the fast forward is checked against. */
  reference(inputs: RefTensor[], attrs: A): RefTensor;
  /** Harness cases: odd sizes (1, 7, 33, 129 and larger) and every attribute combination that matters. */
  cases(): OpCase<A>[];
  /**
   * Set on a fused op that callers run only where the backend has its kernels, else the ops named here (reluConv2d:
   * ['relu', 'conv2d']). A backend without its kernels still runs every job: it is not reported as unsupported.
   */
  readonly fusionOf?: readonly string[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const registry = new Map<string, OpDef<any>>();

export function defineOp<A>(def: OpDef<A>): OpDef<A> {
  if (registry.has(def.name)) throw new Error(`dalle: op '${def.name}' is registered twice`);
  if (typeof def.reference !== 'function' || typeof def.cases !== 'function') {
    throw new Error(`dalle: op '${def.name}' needs a reference and harness cases`);
  }
  if (!Array.isArray(def.kernels)) throw new Error(`dalle: op '${def.name}' must declare the kernels it calls`);
  const missing = missingKernels(cpuBackend, def.kernels);
  if (missing.length > 0) {
    throw new Error(
      `dalle: op '${def.name}' calls kernels the CPU addon lacks (${missing.join(', ')}): rebuild it with \`npm run install\``,
    );
  }
  registry.set(def.name, def);
  return def;
}

/** An op's inputs sit on different devices. */
export class DeviceMismatchError extends Error {
  override name = 'DeviceMismatchError';
}

/** An op has no kernel on the device of its inputs. */
export class UnsupportedOpError extends Error {
  override name = 'UnsupportedOpError';
}

// Kernels each op lacks on each backend, computed once per (backend, op): kernel tables do not change.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const missingCache = new WeakMap<Backend, Map<OpDef<any>, readonly string[]>>();

/** The kernels `def` needs that `backend` lacks ([] = the op runs there). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function opMissingKernels(def: OpDef<any>, backend: Backend): readonly string[] {
  let perOp = missingCache.get(backend);
  if (!perOp) missingCache.set(backend, (perOp = new Map()));
  let missing = perOp.get(def);
  if (!missing) perOp.set(def, (missing = Object.freeze(missingKernels(backend, def.kernels))));
  return missing;
}

/** The registered ops that cannot run on `backend`, each with the kernels it lacks there (fused ops, which callers
 *  replace by the ops they fuse there, are not counted). */
export function unsupportedOps(backend: Backend): Array<{ op: string; missing: readonly string[] }> {
  return registeredOps()
    .filter((def) => !def.fusionOf)
    .map((def) => ({ op: def.name, missing: opMissingKernels(def, backend) }))
    .filter((r) => r.missing.length > 0);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function registeredOps(): OpDef<any>[] {
  return [...registry.values()];
}

/** Runs an op, recording it on the autograd tape when gradients are on and an input requires them. */
export function applyOp<A>(def: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor {
  let backend: Backend = opScope.backend;
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    if (!(t instanceof Tensor)) throw new Error(`dalle: ${def.name}: input ${i} is not a Tensor`);
    if (t.disposed) {
      throw new Error(`dalle: ${def.name}: input ${i} ${shapeStr(t.shape)} was already disposed`);
    }
    const b = t.storage.backend;
    if (i === 0) backend = b;
    else if (b !== backend) {
      throw new DeviceMismatchError(
        `dalle: ${def.name}: input 0 is on ${backend.device} but input ${i} is on ${b.device}; ` +
          'move one with .to(device) first (an op runs on one device)',
      );
    }
  }
  if (backend !== cpuBackend) {
    const missing = opMissingKernels(def, backend);
    if (missing.length > 0) {
      throw new UnsupportedOpError(
        `dalle: op '${def.name}' cannot run on ${backend.device}: its backend has no kernel ${missing.join(', ')}`,
      );
    }
  }
  const saved = new Map<string, Tensor>();
  const prevBackend = opScope.backend;
  const prevKernels = opScope.kernels;
  const prevOp = opScope.op;
  opScope.backend = backend;
  opScope.kernels = def.kernels;
  opScope.op = def.name;
  let out: Tensor;
  try {
    out = noGrad(() => def.forward(inputs, attrs, { save: (k, t) => void saved.set(k, t) }));
  } finally {
    opScope.backend = prevBackend;
    opScope.kernels = prevKernels;
    opScope.op = prevOp;
  }
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
    const opBackend = backend;
    out.gradFn = { op: def.name, inputs, backward: (g) => inOpScope(def.name, opBackend, def.kernels, () => backwardFn(ctx, g)) };
  }
  return out;
}
