// Tensor: a typed view (shape, strides, offset; all in elements) on a reference-counted native Storage.
// Views (reshape, permute, slice) share storage; kernels take contiguous data, and ops call contiguous() first.
// Memory: dispose() releases this tensor's hold on its storage; tidy() (scope.ts) disposes whatever a step created.
// Device: a tensor lives where its storage lives (a backend: the CPU, or a GPU). Factories make tensors on the device
// they are given, else on the running op's device (the CPU outside ops); to(device) is the one explicit transfer, and
// toHost()/toArray()/item() copy a device tensor's values out (a boundary).
import { Backend } from '../backend/backend';
import { Device } from '../backend/device';
import { activeBackend, backendFor } from '../backend/registry';
import {
  DType,
  HostArray,
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  fillKind,
  hostArray,
  itemBytes,
} from './dtype';
import { Disposable, track } from './scope';
import { Storage } from './storage';

export type { Device } from '../backend/device';
export type Shape = readonly number[];

/** A recorded op on the autograd tape: maps the output gradient to one gradient per input (null: none). */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  backward(gradOutput: Tensor): (Tensor | null)[];
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function shapeStr(shape: Shape): string {
  return `(${shape.join(', ')})`;
}

function checkShape(shape: Shape, what: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`dalle: ${what}: invalid shape ${shapeStr(shape)}`);
  }
}

let nextId = 1;

export class Tensor implements Disposable {
  readonly id = nextId++;
  readonly shape: Shape;
  readonly strides: Shape;
  readonly offset: number;
  readonly dtype: DType;
  requiresGrad = false;
  /** Accumulated gradient (leaves that require grad); lives until zeroed or the tensor is disposed. */
  grad: Tensor | null = null;
  /** The op that made this tensor, when it was made with gradients recorded. */
  gradFn: GradNode | null = null;
  name?: string;
  private storageRef: Storage;
  private isDisposed = false;

  /** Low level: wraps `storage` (taking one reference to it). Use the factories below. */
  constructor(storage: Storage, shape: Shape, dtype: DType, strides?: Shape, offset = 0) {
    this.storageRef = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.dtype = dtype;
    track(this);
  }

  /** Uninitialized memory on `device` (default: the running op's device; the CPU outside ops). */
  static empty(shape: Shape, dtype: DType = 'f32', device?: Device): Tensor {
    checkShape(shape, 'empty');
    const backend = device === undefined ? activeBackend() : backendFor(device);
    return new Tensor(new Storage(numel(shape) * itemBytes(dtype), backend), shape, dtype);
  }

  static full(shape: Shape, value: number, dtype: DType = 'f32', device?: Device): Tensor {
    const t = Tensor.empty(shape, dtype, device);
    const raw = dtype === 'f16' ? f32ToF16Bits(value) : dtype === 'bf16' ? f32ToBf16Bits(value) : value;
    t.backend.fill(t.address, t.size, raw, fillKind(dtype));
    return t;
  }

  static zeros(shape: Shape, dtype: DType = 'f32', device?: Device): Tensor {
    return Tensor.full(shape, 0, dtype, device);
  }

  static ones(shape: Shape, dtype: DType = 'f32', device?: Device): Tensor {
    return Tensor.full(shape, 1, dtype, device);
  }

  static scalar(value: number, dtype: DType = 'f32', device?: Device): Tensor {
    return Tensor.full([], value, dtype, device);
  }

  /**
   * From host numbers. For f16/bf16, `data` holds values (rounded to nearest even here) unless it is a Uint16Array,
   * which is taken as raw bit patterns.
   */
  static from(data: ArrayLike<number>, shape: Shape, dtype: DType = 'f32', device?: Device): Tensor {
    checkShape(shape, 'from');
    const n = numel(shape);
    if (data.length !== n) {
      throw new Error(`dalle: Tensor.from: ${data.length} values do not fill shape ${shapeStr(shape)} (${n} elements)`);
    }
    const t = Tensor.empty(shape, dtype, device);
    let host: HostArray;
    if ((dtype === 'f16' || dtype === 'bf16') && !(data instanceof Uint16Array)) {
      host = new Uint16Array(n);
      const conv = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = 0; i < n; i++) host[i] = conv(data[i]);
    } else if (dtype === 'f32' && data instanceof Float32Array) {
      host = data;
    } else if (dtype === 'i32' && data instanceof Int32Array) {
      host = data;
    } else {
      host = hostArray(dtype, n);
      for (let i = 0; i < n; i++) host[i] = data[i];
    }
    if (n > 0) t.backend.copyIn(t.address, host);
    return t;
  }

  get disposed(): boolean {
    return this.isDisposed;
  }

  get storage(): Storage {
    this.assertAlive('storage');
    return this.storageRef;
  }

  /** The backend whose memory holds this tensor. */
  get backend(): Backend {
    return this.storage.backend;
  }

  get device(): Device {
    return this.storage.backend.device;
  }

  get rank(): number {
    return this.shape.length;
  }

  get size(): number {
    return numel(this.shape);
  }

  /** Address of the first element: what kernels receive. */
  get address(): number {
    this.assertAlive('address');
    return this.storageRef.address + this.offset * itemBytes(this.dtype);
  }

  /** Whether this tensor and `other` are views of the same storage (an in-place write to one may change the other). */
  sharesStorageWith(other: Tensor): boolean {
    return this.storageRef === other.storageRef;
  }

  isContiguous(): boolean {
    let expected = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== expected) return false;
      expected *= this.shape[i];
    }
    return true;
  }

  /** A new tensor sharing this one's storage (no autograd: ops in ops/view.ts wrap this). */
  viewAs(shape: Shape, strides: Shape, offset: number): Tensor {
    this.assertAlive('view');
    this.storageRef.retain();
    return new Tensor(this.storageRef, shape, this.dtype, strides, offset);
  }

  /** A contiguous copy of the data, or this data if already contiguous (no autograd; see ops.contiguous). */
  copyContiguousRaw(): Tensor {
    const backend = this.backend;
    const out = new Tensor(new Storage(this.size * itemBytes(this.dtype), backend), this.shape, this.dtype);
    backend.stridedCopy(
      out.address,
      this.address,
      itemBytes(this.dtype),
      [...this.shape],
      contiguousStrides(this.shape),
      [...this.strides],
    );
    return out;
  }

  /** Raw host copy: Float32Array (f32), Int32Array (i32), Uint16Array bit patterns (f16, bf16). */
  toHost(): HostArray {
    this.assertAlive('toHost');
    const host = hostArray(this.dtype, this.size);
    if (this.size === 0) return host;
    if (this.isContiguous()) {
      this.backend.copyOut(this.address, host);
    } else {
      const tmp = this.copyContiguousRaw();
      tmp.backend.copyOut(tmp.address, host);
      tmp.dispose();
    }
    return host;
  }

  /**
   * This tensor on `device`: a new contiguous tensor holding a copy (the explicit host <-> device transfer: one
   * copyOut from this device, one copyIn to the other), or, on the device it is already on, a view of the same memory.
   * Not recorded for autograd: move inputs before a computation and results after it.
   */
  to(device: Device): Tensor {
    const target = backendFor(device);
    if (target === this.backend) return this.viewAs(this.shape, this.strides, this.offset);
    const host = this.toHost();
    const out = new Tensor(new Storage(this.size * itemBytes(this.dtype), target), this.shape, this.dtype);
    if (this.size > 0) target.copyIn(out.address, host);
    return out;
  }

  /**
   * Moves this tensor's memory to `device` in place (the same Tensor object, now on the other device), for a model's
   * parameters (Module.to): other tensors sharing the old memory keep it. Not recorded for autograd.
   */
  moveTo(device: Device): void {
    const target = backendFor(device);
    const old = this.storage;
    if (target === old.backend) return;
    const moved = new Storage(old.bytes, target);
    if (old.bytes > 0) {
      const bytes = new Uint8Array(old.bytes);
      old.backend.copyOut(old.address, bytes);
      target.copyIn(moved.address, bytes);
    }
    this.storageRef = moved;
    old.release();
    this.grad?.moveTo(device);
  }

  /** Values as numbers: Float32Array for float dtypes (16-bit ones widened), Int32Array for i32. */
  toArray(): Float32Array | Int32Array {
    const host = this.toHost();
    if (this.dtype === 'f32' || this.dtype === 'i32') return host as Float32Array | Int32Array;
    const conv = this.dtype === 'f16' ? f16BitsToF32 : bf16BitsToF32;
    const out = new Float32Array(host.length);
    for (let i = 0; i < host.length; i++) out[i] = conv(host[i]);
    return out;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`dalle: item() needs a one-element tensor, got shape ${shapeStr(this.shape)}`);
    return this.toArray()[0];
  }

  /** Releases this tensor's hold on its memory (and its gradient's). Safe to call twice. */
  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.storageRef.release();
    this.gradFn = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  toString(): string {
    return `Tensor(${shapeStr(this.shape)}, ${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  private assertAlive(what: string): void {
    if (this.isDisposed) {
      throw new Error(
        `dalle: ${what} of a disposed tensor ${shapeStr(this.shape)} ${this.dtype}` +
          `${this.name ? ` '${this.name}'` : ''}: it was released by dispose() or by the tidy() scope that made it ` +
          '(keep() it, or return it from the scope)',
      );
    }
  }
}
