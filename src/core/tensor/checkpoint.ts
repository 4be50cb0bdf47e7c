// Activation recomputation ("gradient checkpointing"; Ramesh et al. 2021 train the prior this way to save memory):
// checkpointed(fn, inputs) runs fn without recording gradients, so none of fn's intermediate tensors outlive the
// call, and records one tape node on its output. That node's backward runs fn again with gradients on, from fresh
// leaf views of the inputs, backpropagates the incoming gradient through the recomputed graph (parameters that fn
// reads get their gradients accumulated into .grad as usual) and returns the inputs' gradients; the recomputed
// intermediates are released before it returns. So memory holds one fn's activations at a time instead of all of
// them, for one more forward of fn per backward.
// fn must compute the same values both times: no random numbers drawn inside, and no state it changes.
import { backward, isGradEnabled, noGrad, withGrad } from './autograd';
import { tidy } from './scope';
import { Tensor, shapeStr } from './tensor';

/** The op name checkpointed nodes carry on the tape (not a registered op: its backward is fn's own graph). */
export const CHECKPOINT_OP = 'checkpoint';

/**
 * fn(...inputs) -> one tensor; equal in value and in every gradient to calling fn directly. Without gradient
 * recording it is just fn(...inputs).
 */
export function checkpointed(fn: (...xs: Tensor[]) => Tensor, inputs: readonly Tensor[]): Tensor {
  if (!isGradEnabled()) return fn(...inputs);
  inputs.forEach((t, i) => {
    if (t.disposed) throw new Error(`dalle: checkpointed: input ${i} ${shapeStr(t.shape)} was already disposed`);
  });
  // tidy: fn's intermediates are released now; only its output survives (into the caller's scope).
  const out = noGrad(() => tidy(() => fn(...inputs)));
  if (!(out instanceof Tensor)) throw new Error('dalle: checkpointed: fn must return one Tensor');
  if (inputs.includes(out)) throw new Error('dalle: checkpointed: fn returned one of its inputs; it has nothing to recompute');
  out.requiresGrad = true;
  out.gradFn = {
    op: CHECKPOINT_OP,
    inputs,
    backward: (g: Tensor) => recompute(fn, inputs, out, g),
  };
  return out;
}

function recompute(fn: (...xs: Tensor[]) => Tensor, inputs: readonly Tensor[], out: Tensor, g: Tensor): (Tensor | null)[] {
  // Runs inside backward()'s noGrad. The returned gradients are owned copies in the caller's scope; everything else
  // (leaf views, the recomputed graph, the leaves' .grad) is released by the tidy.
  return tidy(() => {
    // Fresh leaves on the same storage: the recomputed graph ends at them instead of at the inputs' own tape.
    const leaves = inputs.map((x) => {
      const leaf = x.viewAs(x.shape, x.strides, x.offset);
      leaf.requiresGrad = x.requiresGrad && (x.dtype === 'f32' || x.dtype === 'f16' || x.dtype === 'bf16');
      return leaf;
    });
    const y = withGrad(() => fn(...leaves));
    if (y.shape.length !== out.shape.length || y.shape.some((d, i) => d !== out.shape[i])) {
      throw new Error(`dalle: checkpointed: the recomputed output ${shapeStr(y.shape)} differs from the first ${shapeStr(out.shape)}`);
    }
    if (!y.requiresGrad) return inputs.map(() => null); // nothing fn read needs a gradient
    backward(y, g);
    return leaves.map((leaf) => {
      if (!leaf.requiresGrad || !leaf.grad) return null;
      return leaf.grad.copyContiguousRaw(); // the leaf's .grad is kept (outside scopes) and goes with the leaf
    });
  });
}
