// Reverse-mode autograd on a dynamic tape: each op output made while gradients are recorded carries a GradNode
// (tensor.ts). backward() walks the graph from the loss in reverse topological order, and accumulates gradients of
// leaves (parameters) into `.grad`, so several backward() calls before an optimizer step accumulate (gradient
// accumulation). Intermediate gradients are released as soon as they have been propagated.
import { keep } from './scope';
import { Tensor, shapeStr } from './tensor';
import { addInPlace } from './blas1';

let recording = true;

/** Called when backward has finished a leaf's gradient for this call (see whileGradientsComplete). */
let leafGradientListener: ((leaf: Tensor) => void) | undefined;

/**
 * Runs fn (which calls backward) with `listener` called for each leaf right after its gradient is complete: backward
 * visits a leaf once, after every tensor that used it, so its .grad is final for that backward then. Data-parallel
 * training starts reducing a bucket of gradients as soon as all of them are complete, while backward goes on. A leaf
 * reached by two backward calls (a parameter read by two recomputed blocks: checkpoint.ts) is reported twice.
 */
export function whileGradientsComplete<T>(listener: (leaf: Tensor) => void, fn: () => T): T {
  const previous = leafGradientListener;
  leafGradientListener = listener;
  try {
    return fn();
  } finally {
    leafGradientListener = previous;
  }
}

export function isGradEnabled(): boolean {
  return recording;
}

/** Runs fn without recording gradients (inference, optimizer updates, and every op's backward). */
export function noGrad<T>(fn: () => T): T {
  const prev = recording;
  recording = false;
  try {
    return fn();
  } finally {
    recording = prev;
  }
}

/** Runs fn with gradients recorded, even inside noGrad (activation recomputation in a backward: checkpoint.ts). */
export function withGrad<T>(fn: () => T): T {
  const prev = recording;
  recording = true;
  try {
    return fn();
  } finally {
    recording = prev;
  }
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: Array<[Tensor, number]> = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradFn ? t.gradFn.inputs : [];
    if (i < inputs.length) {
      top[1]++;
      const child = inputs[i];
      if (child && child.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      order.push(t);
      stack.pop();
    }
  }
  return order; // children before parents
}

/**
 * Backpropagates from `root`. `gradient` defaults to 1 for a one-element root. Leaf tensors with requiresGrad get
 * their gradient added into `.grad` (created on first use and kept outside any tidy scope).
 */
export function backward(root: Tensor, gradient?: Tensor): void {
  if (!root.requiresGrad) {
    throw new Error('dalle: backward() on a tensor that does not require gradients (no parameter contributed to it, or it was made under noGrad)');
  }
  if (!gradient && root.size !== 1) {
    throw new Error(`dalle: backward() of a non-scalar ${shapeStr(root.shape)} needs an explicit gradient`);
  }
  noGrad(() => {
    const order = topoOrder(root);
    const grads = new Map<Tensor, Tensor>();
    const seed = gradient ?? Tensor.full(root.shape, 1, 'f32', root.device);
    grads.set(root, seed);
    for (let k = order.length - 1; k >= 0; k--) {
      const t = order[k];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      if (!t.gradFn) {
        accumulateLeaf(t, g);
        if (g !== gradient) g.dispose();
        continue;
      }
      const inputGrads = t.gradFn.backward(g);
      const inputs = t.gradFn.inputs;
      // Each map entry owns its tensor. g (t's entry, ours to dispose) may become the entry of one input instead of
      // being copied (an add's backward returns g for both inputs, a bias add's for its matrix input), unless another
      // returned gradient is a view of g's memory (an in-place accumulation into one would change the other).
      let gTransferable = g !== gradient && g.dtype === 'f32' && g.isContiguous()
        && !inputGrads.some((gx) => gx && gx !== g && gx.sharesStorageWith(g));
      const handedOut = new Set<Tensor>();
      for (let i = 0; i < inputs.length; i++) {
        const x = inputs[i];
        let gx = inputGrads[i];
        if (!x || !gx || !x.requiresGrad) continue;
        if (gx.shape.length !== x.shape.length || gx.shape.some((d, j) => d !== x.shape[j])) {
          throw new Error(
            `dalle: backward of '${t.gradFn.op}' gave a gradient ${shapeStr(gx.shape)} for input ${i} of shape ${shapeStr(x.shape)}`,
          );
        }
        const prev = grads.get(x);
        const readable = gx.dtype === 'f32' && gx.isContiguous();
        if (prev) {
          // Accumulated into x's entry: a contiguous f32 gradient is only read, so it needs no copy of its own.
          const src = readable ? gx : ownedCopy(gx);
          addInPlace(prev, src);
          if (src !== gx) src.dispose();
          continue;
        }
        if (gx === g && gTransferable) {
          gTransferable = false;
        } else if (handedOut.has(gx) || gx === g || gx === gradient || !readable) {
          gx = ownedCopy(gx);
        }
        handedOut.add(gx);
        grads.set(x, gx);
      }
      for (const gx of inputGrads) if (gx && !handedOut.has(gx) && gx !== g && gx !== gradient) gx.dispose();
      if (g !== gradient && !handedOut.has(g)) g.dispose();
    }
  });
}

function ownedCopy(t: Tensor): Tensor {
  if (t.dtype !== 'f32') {
    const out = Tensor.empty(t.shape, 'f32', t.device);
    const src = t.isContiguous() ? t : t.copyContiguousRaw();
    t.backend.cast(out.address, 'f32', src.address, src.dtype, t.size);
    if (src !== t) src.dispose();
    return out;
  }
  return t.copyContiguousRaw();
}

function accumulateLeaf(t: Tensor, g: Tensor): void {
  if (t.grad) {
    addInPlace(t.grad, g);
  } else {
    const copy = Tensor.empty(t.shape, 'f32', g.device);
    g.backend.memcpy(copy.address, g.address, g.size * 4);
    t.grad = keep(copy);
  }
  leafGradientListener?.(t);
}

/** Sets every listed tensor's gradient to zero (keeping the buffers: no new pages next step). */
export function zeroGrad(params: readonly Tensor[]): void {
  for (const p of params) {
    if (p.grad) p.grad.backend.fill(p.grad.address, p.grad.size, 0, 'f32');
  }
}
