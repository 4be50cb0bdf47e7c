// Random tensors from the Philox stream, generated natively in parallel: the same values as the TypeScript
// generator's fillUniform / fillNormal / fillGumbel would give (rng.ts defines the stream), for any thread count.
// Made on `device` (default: the running op's device, the CPU outside ops), by that device's backend.
import { backendKernel } from '../backend/backend';
import { Device } from '../backend/device';
import { Philox } from './rng';
import { Shape, Tensor, numel } from './tensor';

type PhiloxFill = (dst: number, n: number, k0: number, k1: number, offLo: number, offHi: number,
  kind: string, a: number, b: number) => void;
/** The kernel random tensors call (an engine kernel outside ops: runtime.ts lists it for a device). */
export const RANDOM_KERNELS = ['philoxFill'] as const;

function fill(rng: Philox, shape: Shape, kind: 'uniform' | 'normal' | 'gumbel', words: number, a: number, b: number,
  device?: Device): Tensor {
  const t = Tensor.empty(shape, 'f32', device);
  const { key, offset } = rng.reserve(words);
  backendKernel<PhiloxFill>(t.backend, 'philoxFill')(t.address, t.size, key[0], key[1], Number(offset & 0xffffffffn), Number(offset >> 32n), kind, a, b);
  return t;
}

/** Uniform in [low, high) (one word per value; low = 0, high = 1 is bit-identical to Philox.fillUniform). */
export function randUniform(rng: Philox, shape: Shape, low = 0, high = 1, device?: Device): Tensor {
  return fill(rng, shape, 'uniform', numel(shape), low, high, device);
}

/** Normal(mean, std^2) by Box-Muller (two words per pair of values, as Philox.fillNormal). */
export function randNormal(rng: Philox, shape: Shape, mean = 0, std = 1, device?: Device): Tensor {
  return fill(rng, shape, 'normal', 2 * Math.ceil(numel(shape) / 2), mean, std, device);
}

/** Standard Gumbel noise (one word per value), for the dVAE's gumbel-softmax relaxation. */
export function randGumbel(rng: Philox, shape: Shape, device?: Device): Tensor {
  return fill(rng, shape, 'gumbel', numel(shape), 0, 1, device);
}
