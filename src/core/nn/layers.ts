// Layers with PyTorch's conventions for shapes and initialisation scales (so weights map over directly).
// Keys: B = batch, T = sequence, C = channels / features.
import { add, conv2d, embedding, layerNorm, matmul, mul, reluThenConv2d, reshape } from '../ops';
import { Tensor } from '../tensor';
import { Philox } from '../tensor/rng';
import { Module, normalInit } from './module';

/** y = x @ Wᵀ + b; weight (out, in), bias (out). x (..., in) -> (..., out). */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, rng: Philox, opts: { bias?: boolean; std?: number } = {}) {
    super();
    this.weight = this.addParameter('weight', normalInit([outFeatures, inFeatures], opts.std ?? 1 / Math.sqrt(inFeatures), rng));
    this.bias = opts.bias === false ? null : this.addParameter('bias', Tensor.zeros([outFeatures]));
  }

  forward(x: Tensor): Tensor {
    const y = matmul(x.rank === 1 ? reshape(x, [1, -1]) : x, this.weight, { transB: true });
    return this.bias ? add(y, this.bias) : y;
  }
}

/** Same-padding, stride-1 convolution; weight (out, in, k, k) named `w` and bias `b`, as in OpenAI's dVAE. */
export class Conv2d extends Module {
  readonly w: Tensor;
  readonly b: Tensor;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, rng: Philox) {
    super();
    // The released dVAE initialises conv weights with std 1 / sqrt(in * k * k) and zero biases.
    const std = 1 / Math.sqrt(inChannels * kernelSize * kernelSize);
    this.w = this.addParameter('w', normalInit([outChannels, inChannels, kernelSize, kernelSize], std, rng));
    this.b = this.addParameter('b', Tensor.zeros([outChannels]));
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.w, this.b);
  }

  /**
   * scale * forward(relu(x)), with the ReLU fused into the convolution where the backend can (no ReLU tensor is made).
   * A scale other than 1 scales the weights and bias instead of the output: (scale w) * x + scale b is the same
   * function, and costs a pass over the (small) weights instead of two over the activations (forward and backward).
   */
  forwardAfterRelu(x: Tensor, scale = 1): Tensor {
    if (scale === 1) return reluThenConv2d(x, this.w, this.b);
    return reluThenConv2d(x, mul(this.w, scale), mul(this.b, scale));
  }
}

/** Layer norm over the last dimension with gain `weight` (ones) and `bias` (zeros). */
export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;

  constructor(readonly features: number, readonly eps = 1e-5) {
    super();
    this.weight = this.addParameter('weight', Tensor.ones([features]));
    this.bias = this.addParameter('bias', Tensor.zeros([features]));
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, { eps: this.eps });
  }
}

/** A lookup table (V, C): i32 indices (...) -> (..., C). */
export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(readonly count: number, readonly features: number, rng: Philox, std = 0.02) {
    super();
    this.weight = this.addParameter('weight', normalInit([count, features], std, rng));
  }

  forward(indices: Tensor): Tensor {
    return embedding(this.weight, indices);
  }
}
