// Device names: 'cpu', or 'cuda:N' for the N-th NVIDIA GPU ('cuda' alone means 'cuda:0'). Parsed once where a name
// comes in (a flag, a factory argument); tensors and backends carry the canonical form, compared as plain strings.
export type Device = 'cpu' | `cuda:${number}`;

export class InvalidDeviceError extends Error {
  override name = 'InvalidDeviceError';
}

/** The canonical device for a name ('cpu', 'cuda', 'cuda:N'); an InvalidDeviceError says what is accepted. */
export function parseDevice(name: string): Device {
  if (name === 'cpu') return 'cpu';
  if (name === 'cuda') return 'cuda:0';
  const m = /^cuda:(0|[1-9][0-9]{0,2})$/.exec(name);
  if (m) return `cuda:${Number(m[1])}`;
  throw new InvalidDeviceError(`dalle: unknown device '${name}': use cpu, cuda or cuda:N (N = the GPU's index, 0 first)`);
}

/** The index of a CUDA device, or null for the CPU. */
export function cudaIndex(device: Device): number | null {
  return device === 'cpu' ? null : Number(device.slice(5));
}

/** Whether two names denote the same device ('cuda' and 'cuda:0' do). */
export function sameDevice(a: string, b: string): boolean {
  return parseDevice(a) === parseDevice(b);
}
