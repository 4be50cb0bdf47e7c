// Engine tensors <-> safetensors / npy files. Loading checks every name, dtype and shape against the tensors it fills
// before copying anything, so a checkpoint from another model fails with a list of what differs.
import { Tensor, shapeStr } from '../tensor';
import { HostArray, IoDtype } from './dtype';
import { checkFinite } from './finite';
import { SafetensorsReader, writeSafetensorsSync } from './safetensors';

/** The engine's dtype for a file dtype (f64 narrows to f32; i64 narrows to i32 with a range check). */
const ENGINE_DTYPE: Partial<Record<IoDtype, Tensor['dtype']>> = { f32: 'f32', f16: 'f16', bf16: 'bf16', i32: 'i32' };

export function tensorToHost(t: Tensor): HostArray {
  return { dtype: t.dtype, shape: [...t.shape], data: t.toHost() } as HostArray;
}

export function hostToTensor(h: HostArray, what = 'tensor'): Tensor {
  const dtype = ENGINE_DTYPE[h.dtype];
  if (dtype) return Tensor.from(h.data as ArrayLike<number>, h.shape, dtype);
  if (h.dtype === 'f64') return Tensor.from(Float32Array.from(h.data as Float64Array), h.shape, 'f32');
  if (h.dtype === 'i64') {
    const data = h.data as BigInt64Array;
    const out = new Int32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (v > 2147483647n || v < -2147483648n) throw new Error(`dalle: ${what}: value ${v} at ${i} does not fit in int32`);
      out[i] = Number(v);
    }
    return Tensor.from(out, h.shape, 'i32');
  }
  if (h.dtype === 'u8' || h.dtype === 'bool') return Tensor.from(h.data as Uint8Array, h.shape, 'i32');
  throw new Error(`dalle: ${what}: dtype ${h.dtype} has no engine equivalent (f32, f16, bf16, i32, i64, f64, u8)`);
}

/** Writes named tensors as one safetensors file (atomically). Returns the file's SHA-256 (hex). */
export function saveTensors(file: string, tensors: ReadonlyMap<string, Tensor> | Iterable<[string, Tensor]>, metadata?: Record<string, string>): string {
  const out = new Map<string, HostArray>();
  for (const [name, t] of tensors) out.set(name, tensorToHost(t));
  return writeSafetensorsSync(file, out, metadata);
}

export interface LoadOptions {
  /** Names in the file that no target takes are an error unless allowed (default false). */
  allowUnused?: boolean;
  /** Targets the file lacks are an error unless allowed (default false). */
  allowMissing?: boolean;
}

/**
 * Fills `targets` (name -> tensor, e.g. a module's parameters) from a safetensors file. Values are cast to each
 * target's dtype. Every mismatch (missing or unexpected name, shape) is reported at once, before any copy; a tensor
 * holding NaN or infinite values is a NonFiniteTensorError (finite.ts) naming it.
 */
export function loadTensorsInto(file: string, targets: ReadonlyMap<string, Tensor>, options: LoadOptions = {}): Record<string, string> {
  const reader = SafetensorsReader.open(file);
  try {
    const problems: string[] = [];
    for (const [name, t] of targets) {
      if (!reader.has(name)) {
        if (!options.allowMissing) problems.push(`missing '${name}' ${shapeStr(t.shape)}`);
        continue;
      }
      const info = reader.info(name);
      const same = info.shape.length === t.shape.length && info.shape.every((d, i) => d === t.shape[i]);
      if (!same) problems.push(`'${name}' is ${shapeStr(info.shape)} in the file, ${shapeStr(t.shape)} in the model`);
    }
    if (!options.allowUnused) {
      for (const name of reader.names) if (!targets.has(name)) problems.push(`unexpected '${name}'`);
    }
    if (problems.length) {
      const shown = problems.slice(0, 12).join('; ') + (problems.length > 12 ? `; and ${problems.length - 12} more` : '');
      throw new Error(`dalle: ${file} does not fit this model: ${shown} (was it written for another configuration?)`);
    }
    for (const [name, t] of targets) {
      if (!reader.has(name)) continue;
      const host = reader.read(name);
      checkFinite(host, file, name);
      const loaded = hostToTensor(host, `${file}: '${name}'`);
      try {
        copyInto(t, loaded);
      } finally {
        loaded.dispose();
      }
    }
    return { ...reader.metadata };
  } finally {
    reader.close();
  }
}

function copyInto(dst: Tensor, src: Tensor): void {
  if (!dst.isContiguous()) throw new Error(`dalle: cannot load into a non-contiguous tensor ${dst}`);
  if (src.backend === dst.backend) {
    dst.backend.cast(dst.address, dst.dtype, src.address, src.dtype, dst.size);
    return;
  }
  // Into another device's tensor: converted where the values are, then copied in (one host -> device transfer).
  const converted = src.dtype === dst.dtype ? src : Tensor.empty(src.shape, dst.dtype, src.device);
  if (converted !== src) src.backend.cast(converted.address, dst.dtype, src.address, src.dtype, src.size);
  dst.backend.copyIn(dst.address, converted.toHost());
  if (converted !== src) converted.dispose();
}
