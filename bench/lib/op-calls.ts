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
export function countOpCalls(ops: readonly OpDef<any>[], fn: () => void): OpCalls {
  const calls: OpCalls = { forward: new Map(), backward: new Map() };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const mutable = ops as Array<{ -readonly [K in keyof OpDef<any>]: OpDef<any>[K] }>;
  const saved = mutable.map((def) => ({ forward: def.forward, backward: def.backward }));
  mutable.forEach((def, i) => {
    const { forward, backward } = saved[i];
    def.forward = (inputs: readonly Tensor[], attrs, ctx) => {
      bump(calls.forward, def.name, callKey(inputs, attrs));
      return forward.call(def, inputs, attrs, ctx);
    };
    if (backward) {
      def.backward = (ctx, g) => {
        bump(calls.backward, def.name, callKey(ctx.inputs, ctx.attrs));
        return backward.call(def, ctx, g);
      };
    }
  });
  try {
    fn();
  } finally {
    mutable.forEach((def, i) => {
      def.forward = saved[i].forward;
      def.backward = saved[i].backward;
    });
  }
  return calls;
}
