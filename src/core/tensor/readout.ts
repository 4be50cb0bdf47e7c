// Reading results out of a device: the boundary where a step's scalars (losses, metrics) reach the host. On the CPU
// each value is read where it is (no copy beyond item()'s); on a GPU the scalars are first gathered into one small
// device buffer, so a step's readout is one device -> host copy however many values it carries.
import { Tensor } from './tensor';

/** The values of one-element tensors, in order, as numbers (through f32 on a GPU: for losses and metrics); one host copy for all of them when they sit on a GPU. */
export function readScalars(tensors: readonly Tensor[]): number[] {
  for (const t of tensors) {
    if (t.size !== 1) throw new Error(`dalle: readScalars needs one-element tensors, got ${t}`);
  }
  if (tensors.length === 0) return [];
  const backend = tensors[0].backend;
  if (backend.device === 'cpu' || tensors.length === 1) return tensors.map((t) => t.item());
  const packed = Tensor.empty([tensors.length], 'f32', backend.device);
  try {
    tensors.forEach((t, i) => {
      if (t.backend !== backend) throw new Error(`dalle: readScalars: values on ${backend.device} and ${t.device}: move them first`);
      if (t.dtype === 'f32') backend.memcpy(packed.address + 4 * i, t.address, 4);
      else backend.cast(packed.address + 4 * i, 'f32', t.address, t.dtype, 1);
    });
    return Array.from(packed.toArray());
  } finally {
    packed.dispose();
  }
}
