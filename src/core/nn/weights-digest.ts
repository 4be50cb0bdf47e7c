/**
 * The identity of a model's weights: sha256 over every parameter, in name order, of its name, dtype, shape and values
 * (as the engine holds them: f32 or i32; 16-bit ones widened to f32). Two models have the same digest exactly when
 * they compute with the same numbers, whatever file or path they were loaded from. `dalle export` records it, so
 * `--runtime onnx --onnx DIR` can tell whether DIR was exported from the model named beside it.
 */
import { createHash } from 'node:crypto';
import type { Tensor } from '../tensor';

export function weightsDigest(params: ReadonlyArray<readonly [string, Tensor]>): string {
  const hash = createHash('sha256');
  const sorted = [...params].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [name, tensor] of sorted) {
    const values = tensor.toArray();
    hash.update(`${name}\u0000${values instanceof Int32Array ? 'i32' : 'f32'}\u0000${tensor.shape.join(',')}\u0000`);
    hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }
  return hash.digest('hex');
}
