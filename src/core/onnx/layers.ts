// Engine layers as ONNX nodes, shared by the dVAE, prior and CLIP exporters: weights become initializers.
import type { LayerNorm, Linear } from '../nn/layers';
import type { Tensor } from '../tensor';
import type { GraphBuilder } from './graph';

/** A float tensor's values as f32 (16-bit dtypes widened). */
export function f32(t: Tensor): Float32Array {
  const data = t.toArray();
  return data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
}

/** Linear x @ Wᵀ (+ b): Wᵀ (in, out) stored as an initializer. */
export function linearNode(g: GraphBuilder, x: string, l: Linear, name: string): string {
  const w = f32(l.weight);
  const [O, I] = l.weight.shape;
  const wt = new Float32Array(I * O);
  for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) wt[i * O + o] = w[o * I + i];
  const y = g.node('MatMul', [x, g.constant(`${name}.weight_t`, wt, [I, O])]);
  return l.bias ? g.node('Add', [y, g.constant(`${name}.bias`, f32(l.bias), [O])]) : y;
}

/** LayerNormalization over the last axis with the layer's gain, bias and eps. */
export function layerNormNode(g: GraphBuilder, x: string, ln: LayerNorm, name: string): string {
  const w = g.constant(`${name}.weight`, f32(ln.weight), [ln.features]);
  const b = g.constant(`${name}.bias`, f32(ln.bias), [ln.features]);
  return g.node('LayerNormalization', [x, w, b], { axis: { int: -1 }, epsilon: { float: ln.eps } });
}
