// A small pre-norm residual MLP stack for the precision tests: resblock r computes x + gain_r * proj(gelu(fc(ln(x)))),
// through a ResidualHook like the prior's blocks. gain_r is a fixed fp32 constant on the branch output (a LayerScale):
// it sets how large resblock r's gradients are relative to the others, which is what the underflow test needs.
// Key: B = batch, C = width, H = hidden width.
import { Module } from '../../src/core/nn/module';
import { LayerNorm, Linear } from '../../src/core/nn/layers';
import { gelu, mean, scale, square, sub } from '../../src/core/ops';
import { OpDef, Philox, Tensor, applyOp, refTensor } from '../../src/core/tensor';
import { ResidualHook, plainResidual } from '../../src/core/train/precision';

export class ToyBlock extends Module {
  readonly ln: LayerNorm;
  readonly fc: Linear;
  readonly proj: Linear;
  constructor(C: number, H: number, rng: Philox) {
    super();
    this.ln = this.addModule('ln', new LayerNorm(C));
    this.fc = this.addModule('fc', new Linear(C, H, rng));
    this.proj = this.addModule('proj', new Linear(H, C, rng));
  }
}

class BlockList extends Module {
  add<M extends Module>(name: string, m: M): M {
    return this.addModule(name, m);
  }
}

/** Sets element `index` of the gradient flowing back through it to `value` (Inf, NaN): an injected fault. */
const injectOp: OpDef<{ index: number; value: number }> = {
  name: 'testInjectGrad',
  kernels: [],
  forward([x]) {
    return x.viewAs(x.shape, x.strides, x.offset);
  },
  backward(ctx, g) {
    const host = Float32Array.from(g.toArray());
    host[ctx.attrs.index] = ctx.attrs.value;
    return [Tensor.from(host, g.shape)];
  },
  reference([x]) {
    return refTensor(x.shape, x.data);
  },
  cases: () => [],
};

export class ToyResidual extends Module {
  readonly blocks: ToyBlock[] = [];
  residual: ResidualHook = plainResidual;
  /** When set: the gradient inside resblock `r` (at its hidden activation) gets `value` at element `index`. */
  inject: { r: number; index: number; value: number } | null = null;

  constructor(readonly C: number, readonly H: number, readonly gains: readonly number[], seed: number) {
    super();
    const rng = new Philox(seed);
    const list = this.addModule('blocks', new BlockList());
    gains.forEach((_, r) => this.blocks.push(list.add(String(r), new ToyBlock(C, H, rng))));
  }

  /** The modules of each resblock, for Precision.attach. */
  resblocks(): Module[][] {
    return this.blocks.map((b) => [b]);
  }

  /** x (B, C) -> (B, C). */
  forward(x: Tensor): Tensor {
    let h = x;
    this.blocks.forEach((b, r) => {
      h = this.residual.resblock(r, h, (y) => {
        let a = gelu(b.fc.forward(b.ln.forward(y))); // (B, H)
        if (this.inject && this.inject.r === r) a = applyOp(injectOp, [a], { index: this.inject.index, value: this.inject.value });
        return scale(b.proj.forward(a), this.gains[r]);
      });
    });
    return h;
  }

  /** weight * mean((forward(x) - target)^2). */
  loss(x: Tensor, target: Tensor, weight = 1): Tensor {
    return scale(mean(square(sub(this.forward(x), target))), weight);
  }
}
