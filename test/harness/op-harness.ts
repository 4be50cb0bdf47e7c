// The shared op harness: runs one registered op on one case, checks the fast forward against the float64 reference
// and the backward against central finite differences of the reference (in float64).
import {
  DType,
  Device,
  InputSpec,
  OpCase,
  OpDef,
  RefTensor,
  Tensor,
  Tolerance,
  applyOp,
  backward,
  isFloat,
  refTensor,
  roundTo,
  tidy,
  numel,
  liveStorage,
} from '../../src/core/tensor';
import { makeRandom } from './random';

export const DEFAULT_TOL: Record<DType, Tolerance> = {
  f32: { rtol: 1e-4, atol: 1e-5 },
  f16: { rtol: 1e-3, atol: 1e-3 }, // half an ulp of f16 is 4.9e-4 relative
  bf16: { rtol: 8e-3, atol: 8e-3 }, // half an ulp of bf16 is 3.9e-3 relative
  i32: { rtol: 0, atol: 0 },
};

type Rand = ReturnType<typeof makeRandom>;

export function randomValues(spec: InputSpec, rand: Rand): Float64Array {
  const n = numel(spec.shape);
  const out = new Float64Array(n);
  const dtype = spec.dtype ?? (spec.kind === 'int' ? 'i32' : 'f32');
  for (let i = 0; i < n; i++) {
    let v: number;
    switch (spec.kind ?? 'normal') {
      case 'uniform':
        v = rand.uniform() * 2 - 1;
        break;
      case 'positive':
        v = 0.5 + 1.5 * rand.uniform();
        break;
      case 'int':
        v = rand.int(spec.low ?? 0, spec.high ?? 10);
        break;
      default:
        v = rand.normal();
    }
    out[i] = roundTo(dtype, v);
  }
  return out;
}

export interface CaseReport {
  maxAbsErr: number;
  gradChecked: boolean;
}

function compare(what: string, got: ArrayLike<number>, want: RefTensor, tol: Tolerance): number {
  if (got.length !== want.data.length) throw new Error(`${what}: ${got.length} values, reference has ${want.data.length}`);
  let maxErr = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i];
    const w = want.data[i];
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    if (w === g) continue; // also equal infinities
    const err = Math.abs(g - w);
    if (!(err <= tol.atol + tol.rtol * Math.abs(w))) {
      throw new Error(`${what}: element ${i}: got ${g}, reference ${w} (|err| ${err.toExponential(3)} > ${tol.atol} + ${tol.rtol}*|ref|)`);
    }
    maxErr = Math.max(maxErr, err);
  }
  return maxErr;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** sum(g * reference(inputs)) in float64: the scalar whose gradient the engine's backward computes. */
function projected<A>(def: OpDef<A>, inputs: RefTensor[], attrs: A, g: Float64Array): number {
  return dot(def.reference(inputs, attrs).data, g);
}

/** Runs the case with its inputs on `device` (moved there with .to(); outputs and gradients are copied back). */
export function runCase<A>(def: OpDef<A>, c: OpCase<A>, seed: number, device: Device = 'cpu'): CaseReport {
  const rand = makeRandom(seed);
  const label = `${def.name}${c.name ? ` [${c.name}]` : ''} (seed ${seed})`;
  const values = c.inputs.map((spec) => randomValues(spec, rand));
  const refs = c.inputs.map((spec, i) => refTensor(spec.shape, values[i]));
  const want = def.reference(refs, c.attrs);
  const dtypes = c.inputs.map((s) => s.dtype ?? (s.kind === 'int' ? 'i32' : 'f32'));
  const gradInputs = c.inputs.map((s, i) => !!def.backward && isFloat(dtypes[i]) && s.grad !== false);
  const mode = c.gradcheck ?? (def.backward ? 'directional' : 'none');
  const before = liveStorage().count;
  let report: CaseReport = { maxAbsErr: 0, gradChecked: false };

  const tensors = c.inputs.map((spec, i) => {
    const host = Tensor.from(values[i], spec.shape, dtypes[i]);
    const t = device === 'cpu' ? host : host.to(device);
    if (t !== host) host.dispose();
    t.requiresGrad = mode !== 'none' && gradInputs[i];
    return t;
  });
  try {
    tidy(() => {
      const out = applyOp(def, tensors, c.attrs);
      const tol = { ...DEFAULT_TOL[out.dtype], ...c.tol };
      const shapeOk = out.shape.length === want.shape.length && out.shape.every((d, i) => d === want.shape[i]);
      if (!shapeOk) throw new Error(`${label}: output shape (${out.shape}) but reference (${want.shape})`);
      report.maxAbsErr = compare(`${label} forward`, out.toArray(), want, tol);

      if (mode === 'none' || !out.requiresGrad) return;
      const gValues = randomValues({ shape: [...out.shape], kind: 'normal' }, rand);
      backward(out, Tensor.from(gValues, out.shape, 'f32', out.device));
      report.gradChecked = true;
      const grads = tensors.map((t, i) => (gradInputs[i] ? t.grad!.toArray() : null));
      const eps = 1e-5;
      const gradTol = { rtol: 1e-3, atol: 1e-4, ...(c.tol ? { rtol: Math.max(1e-3, c.tol.rtol ?? 0) } : {}) };
      if (mode === 'full') {
        refs.forEach((r, i) => {
          if (!grads[i]) return;
          const numeric = new Float64Array(r.data.length);
          for (let k = 0; k < r.data.length; k++) {
            const x0 = r.data[k];
            r.data[k] = x0 + eps;
            const fp = projected(def, refs, c.attrs, gValues);
            r.data[k] = x0 - eps;
            const fm = projected(def, refs, c.attrs, gValues);
            r.data[k] = x0;
            numeric[k] = (fp - fm) / (2 * eps);
          }
          compare(`${label} gradient of input ${i}`, grads[i]!, refTensor(r.shape, numeric), gradTol);
        });
      } else {
        for (let trial = 0; trial < 2; trial++) {
          const dirs = refs.map((r, i) => (grads[i] ? randomValues({ shape: r.shape }, rand) : null));
          const shifted = (sign: number) =>
            refs.map((r, i) => {
              const d = dirs[i];
              return d ? refTensor(r.shape, r.data.map((v, k) => v + sign * eps * d[k])) : r;
            });
          const numeric = (projected(def, shifted(1), c.attrs, gValues) - projected(def, shifted(-1), c.attrs, gValues)) / (2 * eps);
          let analytic = 0;
          let scale = 0;
          grads.forEach((gr, i) => {
            if (!gr) return;
            const d = dirs[i]!;
            for (let k = 0; k < gr.length; k++) {
              analytic += gr[k] * d[k];
              scale += Math.abs(gr[k] * d[k]);
            }
          });
          const err = Math.abs(numeric - analytic);
          if (!(err <= gradTol.rtol * scale + gradTol.atol)) {
            throw new Error(
              `${label} directional gradient: backward gives ${analytic}, finite differences ${numeric} ` +
                `(|err| ${err.toExponential(3)} > ${gradTol.rtol} * ${scale.toExponential(3)} + ${gradTol.atol})`,
            );
          }
        }
      }
    });
  } finally {
    for (const t of tensors) t.dispose();
  }
  const after = liveStorage().count;
  if (after !== before) throw new Error(`${label}: ${after - before} tensor storages not released`);
  return report;
}
