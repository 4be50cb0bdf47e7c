// The same inputs on two backends (the CPU and a GPU), a kernel called by name on both with each side's addresses,
// and the outputs compared: for the CUDA kernels that are not ops (test/cuda/gpu.test.ts); ops are compared by the
// op harness on cuda:0 (test/ops.test.ts).
import * as assert from 'node:assert';
import { Backend, backendKernel } from '../../src/core/backend';

export type Pair = readonly [number, number];
type Typed = Float32Array | Int32Array | Uint16Array;
type Fn = (...args: unknown[]) => unknown;

export class Twin {
  private held: Array<[number, number, number]> = [];
  constructor(readonly cpu: Backend, readonly gpu: Backend) {}

  /** `data` on both backends. */
  put(data: Typed): Pair {
    const pair = this.zeros(data.byteLength);
    if (data.byteLength > 0) {
      this.cpu.copyIn(pair[0], data);
      this.gpu.copyIn(pair[1], data);
    }
    return pair;
  }

  /** `bytes` zero bytes on both backends. */
  zeros(bytes: number): Pair {
    const size = Math.max(bytes, 4);
    const pair: Pair = [this.cpu.alloc(size), this.gpu.alloc(size)];
    this.cpu.fill(pair[0], size / 4, 0, 'f32');
    this.gpu.fill(pair[1], size / 4, 0, 'f32');
    this.held.push([pair[0], pair[1], size]);
    return pair;
  }

  /** Kernel `name` on both backends; `args` builds its arguments from each side's addresses. Returns [cpu, gpu]. */
  call(name: string, args: (at: (p: Pair | null) => number | null) => unknown[]): [unknown, unknown] {
    const cpu = backendKernel<Fn>(this.cpu, name)(...args((p) => (p ? p[0] : null)));
    const gpu = backendKernel<Fn>(this.gpu, name)(...args((p) => (p ? p[1] : null)));
    return [cpu, gpu];
  }

  /** n f32 values of `pair` from each side: [cpu, gpu]. */
  read(pair: Pair, n: number): [Float32Array, Float32Array] {
    const out: [Float32Array, Float32Array] = [new Float32Array(n), new Float32Array(n)];
    this.cpu.copyOut(pair[0], out[0]);
    this.gpu.copyOut(pair[1], out[1]);
    return out;
  }

  free(): void {
    for (const [c, g, size] of this.held) {
      this.cpu.free(c, size);
      this.gpu.free(g, size);
    }
    this.held = [];
  }
}

/** Every GPU value within atol + rtol * |cpu| of the CPU's (NaN where the CPU has NaN); names the worst element. */
export function assertClose(what: string, [cpu, gpu]: [Float32Array, Float32Array], atol: number, rtol: number): void {
  let worst = 0;
  let at = -1;
  for (let i = 0; i < cpu.length; i++) {
    const [a, b] = [gpu[i], cpu[i]];
    const err = Number.isNaN(b) ? (Number.isNaN(a) ? 0 : Infinity) : a === b ? 0 : Math.abs(a - b) / (atol + rtol * Math.abs(b));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  assert.ok(worst <= 1, `${what}: element ${at} is ${gpu[at]} on the GPU, ${cpu[at]} on the CPU (${worst.toPrecision(3)} x the tolerance)`);
}
