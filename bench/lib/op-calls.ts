// Counts the op calls of a piece of work (one training step), by op, input shapes and dtypes, and attributes, so a
// benchmark can weigh an op's time by how often a step runs it. It wraps each registered op's forward and backward
// for the length of `fn` (applyOp reads def.forward and def.backward at each call, so no hook in the engine is
// needed) and restores them afterwards, also when fn throws. Nested calls count too: a backward made of ops calls
// their forwards through applyOp.
import { OpDef, Tensor } from '../../src/core/tensor';

/** The key of one call: "dtype[d0,d1,...];..." of the inputs and the attributes as JSON. */
export function callKey(inputs: ReadonlyArray<{ dtype: string; shape: readonly number[] }>, attrs: unknown): string {
  return `${inputs.map((t) => `${t.dtype}[${t.shape.join(',')}]`).join(';')} ${JSON.stringify(attrs ?? {})}`;
}

export interface OpCalls {
  /** op name -> call key -> forward calls in fn. */
  readonly forward: Map<string, Map<string, number>>;
  /** op name -> call key (the forward's inputs and attributes) -> backward calls in fn. */
  readonly backward: Map<string, Map<string, number>>;
}

function bump(m: Map<string, Map<string, number>>, op: string, key: string): void {
  let perOp = m.get(op);
  if (!perOp) m.set(op, (perOp = new Map()));
  perOp.set(key, (perOp.get(key) ?? 0) + 1);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyOp = OpDef<any>;

/**
 * Runs fn with each op's forward and backward replaced by wrap's (given the originals), and restores them afterwards,
 * also when fn throws. applyOp reads def.forward and def.backward at each call, so no hook in the engine is needed.
 */
export function withWrappedOps(ops: readonly AnyOp[], wrap: (def: AnyOp, forward: AnyOp['forward'], backward: AnyOp['backward']) =>
  { forward: AnyOp['forward']; backward: AnyOp['backward'] }, fn: () => void): void {
  const mutable = ops as Array<{ -readonly [K in keyof AnyOp]: AnyOp[K] }>;
  const saved = mutable.map((def) => ({ forward: def.forward, backward: def.backward }));
  mutable.forEach((def, i) => {
    const w = wrap(def, saved[i].forward, saved[i].backward);
    def.forward = w.forward;
    if (saved[i].backward) def.backward = w.backward;
  });
  try {
    fn();
  } finally {
    mutable.forEach((def, i) => {
      def.forward = saved[i].forward;
      def.backward = saved[i].backward;
    });
  }
}

export function countOpCalls(ops: readonly AnyOp[], fn: () => void): OpCalls {
  const calls: OpCalls = { forward: new Map(), backward: new Map() };
  withWrappedOps(ops, (def, forward, backward) => ({
    forward: (inputs: readonly Tensor[], attrs, ctx) => {
      bump(calls.forward, def.name, callKey(inputs, attrs));
      return forward.call(def, inputs, attrs, ctx);
    },
    backward: backward && ((ctx, g) => {
      bump(calls.backward, def.name, callKey(ctx.inputs, ctx.attrs));
      return backward.call(def, ctx, g);
    }),
  }), fn);
  return calls;
}
