// Times the op calls of a piece of work (one training step) by op, pass and call key, the way op-calls.ts counts them:
// it wraps each registered op's forward and backward for the length of `fn` and restores them afterwards. Each call's
// time is exclusive: a backward made of ops (which run their forwards through applyOp) is charged only for what runs
// outside those nested calls, so the times add up to the step's time spent in ops.
import { OpDef, Tensor } from '../../src/core/tensor';
import { callKey, withWrappedOps } from './op-calls';

export interface OpTime {
  readonly op: string;
  readonly pass: 'fwd' | 'bwd';
  readonly key: string;
  calls: number;
  /** Exclusive milliseconds over all calls. */
  ms: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function timeOpCalls(ops: readonly OpDef<any>[], fn: () => void): { times: OpTime[]; totalMs: number } {
  const times = new Map<string, OpTime>();
  // The nanoseconds spent in nested op calls of each open call (a stack, innermost last).
  const nested: bigint[] = [];
  const timed = <R>(op: string, pass: 'fwd' | 'bwd', key: string, run: () => R): R => {
    nested.push(0n);
    const t0 = process.hrtime.bigint();
    try {
      return run();
    } finally {
      const inclusive = process.hrtime.bigint() - t0;
      const inner = nested.pop()!;
      if (nested.length) nested[nested.length - 1] += inclusive;
      const id = `${op}|${pass}|${key}`;
      let t = times.get(id);
      if (!t) times.set(id, (t = { op, pass, key, calls: 0, ms: 0 }));
      t.calls++;
      t.ms += Number(inclusive - inner) / 1e6;
    }
  };
  const t0 = process.hrtime.bigint();
  withWrappedOps(ops, (def, forward, backward) => ({
    forward: (inputs: readonly Tensor[], attrs, ctx) =>
      timed(def.name, 'fwd', callKey(inputs, attrs), () => forward.call(def, inputs, attrs, ctx)),
    backward: backward && ((ctx, g) => timed(def.name, 'bwd', callKey(ctx.inputs, ctx.attrs), () => backward.call(def, ctx, g))),
  }), fn);
  return { times: [...times.values()].sort((a, b) => b.ms - a.ms), totalMs: Number(process.hrtime.bigint() - t0) / 1e6 };
}
