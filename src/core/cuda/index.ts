// The CUDA backend's addon (build/Release/dalle_cuda.node, native/cuda), loaded lazily: nothing here runs until a
// caller asks (`--device cuda`, `dalle info`, the GPU checks), so a machine without CUDA never touches it, and a
// machine whose addon was built but has no driver or GPU gets a reason, not a crash. The main addon never depends on it.
import * as fs from 'fs';
import * as path from 'path';

export type CudaDType = 'f32' | 'f16' | 'bf16';
/** cast also takes i32 (as the CPU addon's cast). */
export type CudaCastDType = CudaDType | 'i32';
export type CudaMaskKind = 'row' | 'column' | 'conv';

export interface CudaDevice {
  index: number;
  name: string;
  computeCapability: string;
  memoryBytes: number;
  multiprocessors: number;
}

export interface CudaAddonInfo {
  runtimeVersion: number;
  driverVersion: number;
  deviceCount: number;
  devices: CudaDevice[];
  error?: string;
}

/** The main addon's AllocStats (src/core/native.ts) for device memory, plus the driver's calls. */
export interface CudaAllocStats {
  bytesInUse: number;
  bytesCached: number;
  peakBytesInUse: number;
  allocs: number;
  cacheHits: number;
  /** cudaMalloc calls that succeeded. */
  driverAllocs: number;
  /** cudaFree calls (trim, or the retry after a refusal). */
  driverFrees: number;
}

/** The CUDA addon's entry points (native/cuda/addon.cc); device memory is addressed by plain numbers. */
export interface CudaAddon {
  info(): CudaAddonInfo;
  setDevice(index: number): void;
  /** Uninitialized device memory from the caching allocator (native/cuda/device_allocator.h); malloc is the same. */
  alloc(bytes: number): number;
  malloc(bytes: number): number;
  /** Back to the cache; bytes, the size given to alloc, is checked when given. */
  free(address: number, bytes?: number): void;
  allocStats(): CudaAllocStats;
  /** Gives every cached block back to the driver. */
  trim(): void;
  resetPeak(): void;
  /** The bytes a request of `bytes` takes in the caching allocator (its size class); needs no device. */
  sizeClass(bytes: number): number;
  copyIn(address: number, data: ArrayBufferView): void;
  /** The typed array first: the main addon's copyOut takes the address first. */
  copyOut(data: ArrayBufferView, address: number): void;
  /** Device -> same device, ordered with the kernels (the addon's one stream). */
  memcpy(dst: number, src: number, bytes: number): void;
  memset(address: number, byte: number, bytes: number): void;
  synchronize(): void;
  /** null when cuBLASLt is loaded, else why it is not. */
  cublasLtStatus(): string | null;
  gemm(
    dtype: CudaDType, transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number, A: number,
    lda: number, strideA: number, B: number, ldb: number, strideB: number, beta: number, C: number, ldc: number,
    strideC: number, batch: number, tf32: boolean,
  ): void;
  /** Block-sparse attention of the prior's masks: fp32 on CUDA cores, fp16 / bf16 on tensor cores (mma.sync). */
  blockSparseAttentionForward(
    dtype: CudaDType, kind: CudaMaskKind, textLen: number, gridSide: number, convKernel: number, q: number, k: number,
    v: number, o: number, lse: number, B: number, H: number, D: number, Dv: number, scale: number,
  ): void;
  blockSparseAttentionBackward(
    dtype: CudaDType, kind: CudaMaskKind, textLen: number, gridSide: number, convKernel: number, q: number, k: number,
    v: number, o: number, dO: number, lse: number, dq: number, dk: number, dv: number, delta: number, B: number,
    H: number, D: number, Dv: number, scale: number,
  ): void;
  /**
   * The KV-cache decode step of generation: the query of sequence position `position`, q (B, H, 1, D), against the
   * cached keys and values k (B', H, Tc, D), v (B', H, Tc, Dv) of the positions its mask row allows (all <= position,
   * which the cache must hold). Strides are in elements, [batch, head, time] (q's time stride is not used); out
   * (B, H, 1, Dv) contiguous, lse (B, H) f32. fp16 / bf16 caches take q and give out in the same type. D, Dv <= 64.
   * (A GPU-only entry point: the engine's decode step is the dense attentionForward below with the rows of the mask.)
   */
  attentionDecode(
    dtype: CudaDType, q: number, qStrides: number[], k: number, kStrides: number[], v: number, vStrides: number[],
    out: number, lse: number, kind: CudaMaskKind, textLen: number, gridSide: number, convKernel: number, B: number,
    H: number, position: number, D: number, Dv: number, scale: number,
  ): void;
  /** Dense attention with an arbitrary (Tq, Tk) i32 mask (or none) and an optional causal limit: the CPU kernel's
   *  signature and meaning (native/cpu/attention.cc), f32; q, k, v, dO strided by [batch, head, time]. */
  attentionForward(
    q: number, qStrides: number[], k: number, kStrides: number[], v: number, vStrides: number[], mask: number | null,
    out: number, lse: number, B: number, H: number, Tq: number, Tk: number, D: number, Dv: number, scale: number,
    causal: boolean,
  ): void;
  attentionBackward(
    q: number, qStrides: number[], k: number, kStrides: number[], v: number, vStrides: number[], mask: number | null,
    dO: number, dOStrides: number[], lse: number, dq: number | null, dk: number | null, dv: number | null, B: number,
    H: number, Tq: number, Tk: number, D: number, Dv: number, scale: number, causal: boolean,
  ): void;
  /** y += alpha * x (the CPU axpy). */
  axpy(n: number, alpha: number, x: number, y: number): void;
  /** x *= alpha (the CPU scale). */
  scale(n: number, alpha: number, x: number): void;
  /** The sum of x^2 in float64, returned to the host: synchronizes. */
  sumSquares(n: number, x: number): number;
  /** The sums of squares of several tensors in one launch and one copy back: sum over i of sumSquares(sizes[i],
   *  addresses[i]), each tensor's sum added in list order (as a loop of sumSquares would). Synchronizes once. */
  sumSquaresBatch(addresses: number[], sizes: number[]): number;
  /** i32 -> float rounds to nearest; float -> i32 truncates toward zero, saturating, NaN -> 0. */
  cast(dst: number, dstDtype: CudaCastDType, src: number, srcDtype: CudaCastDType, count: number): void;
  geluForward(dtype: CudaDType, x: number, y: number, n: number): void;
  geluBackward(dtype: CudaDType, x: number, g: number, dx: number, n: number): void;
  adamw(
    n: number, p: number, g: number, m: number, v: number, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, gradScale: number, step: number,
  ): void;
  /** y = alpha * x with non-finite products set to 0; returns how many were non-finite. */
  scaleFilter(dtype: CudaDType, n: number, x: number, y: number, alpha: number): number;
  layerNormForward(
    dtype: CudaDType, x: number, gain: number, bias: number, y: number, mean: number, rstd: number, R: number, C: number,
    eps: number,
  ): void;
  layerNormBackward(
    dtype: CudaDType, x: number, gain: number, mean: number, rstd: number, g: number, dx: number | null,
    dgain: number | null, dbias: number | null, R: number, C: number,
  ): void;
  crossEntropyForward(
    logits: number, N: number, V: number, targets: number, weights: number | null, hasIgnore: boolean,
    ignoreIndex: number, mean: boolean, out: number, lse: number, nll: number,
  ): void;
  crossEntropyBackward(
    logits: number, N: number, V: number, targets: number, weights: number | null, hasIgnore: boolean,
    ignoreIndex: number, mean: boolean, lse: number, nll: number, g: number, dlogits: number | null,
    dweights: number | null,
  ): void;
  conv2dForward(
    x: number, w: number, bias: number | null, y: number, B: number, Cin: number, Cout: number, H: number, W: number,
    k: number,
  ): void;
  conv2dBackward(
    x: number, w: number, dy: number, dx: number | null, dw: number | null, db: number | null, B: number, Cin: number,
    Cout: number, H: number, W: number, k: number,
  ): void;
  // The ops below have the CPU addon's names and signatures (native/cpu), with device addresses: the engine looks
  // kernels up by name on either backend. f32 unless stated.
  /** kind 'u16': value is the raw 16-bit pattern. */
  fill(dst: number, count: number, value: number, kind: 'f32' | 'i32' | 'u16'): void;
  stridedCopy(
    dst: number, src: number, itemBytes: number, shape: number[], dstStrides: number[], srcStrides: number[],
  ): void;
  /** Op codes of native/cpu/elementwise.cc; out contiguous, x strided. */
  ewUnary(code: number, out: number, x: number, shape: number[], xStrides: number[], alpha: number, beta: number): void;
  ewUnaryFlat(code: number, n: number, out: number, x: number, alpha: number, beta: number): void;
  /** Strides 0 where broadcast. */
  ewBinary(
    code: number, out: number, a: number, aStrides: number[], b: number, bStrides: number[], shape: number[],
  ): void;
  ewBinaryFlat(code: number, n: number, out: number, a: number, b: number): void;
  /** Over the last axis of (R, C). */
  softmaxForward(x: number, y: number, R: number, C: number, log: boolean): void;
  softmaxBackward(y: number, g: number, dx: number, R: number, C: number, log: boolean): void;
  /** code 0: out = scale * sum over R of (outer, R, inner); 1: max and the first argmax (idx int32, may be null). */
  reduce(
    code: number, x: number, outer: number, R: number, inner: number, out: number, idx: number | null, scale: number,
  ): void;
  /** dx (already zero) gets g at the argmax positions; synchronizes to check the indices. */
  reduceMaxBackward(dx: number, g: number, idx: number, outer: number, R: number, inner: number): void;
  /** Synchronizes to check the indices (int32) first. */
  embeddingForward(table: number, V: number, C: number, idx: number, idxShape: number[], out: number): void;
  embeddingBackward(g: number, idx: number, N: number, V: number, C: number, dtable: number): void;
  maxpool2x2Forward(x: number, y: number, argmax: number, B: number, C: number, H: number, W: number): void;
  maxpool2x2Backward(dy: number, argmax: number, dx: number, B: number, C: number, H: number, W: number): void;
  upsample2xForward(x: number, y: number, B: number, C: number, H: number, W: number): void;
  upsample2xBackward(dy: number, dx: number, B: number, C: number, H: number, W: number): void;
  /** The CPU's Philox stream (native/cpu/random.cc, src/core/tensor/rng.ts) for the same key and offset. */
  philoxFill(
    dst: number, n: number, key0: number, key1: number, offsetLo: number, offsetHi: number,
    kind: 'uniform' | 'normal' | 'gumbel', a: number, b: number,
  ): void;
}

/** What the build left (native/cuda/build.js writes it next to the addon). */
export interface CudaBuildReport {
  built: boolean;
  reason: string;
  nvcc?: string;
  arch?: string[];
  seconds?: number;
}

export interface CudaStatus {
  /** The addon file exists. */
  built: boolean;
  /** It loaded (cudart is linked statically, so it loads without a driver). */
  loaded: boolean;
  /** At least one device answered. */
  available: boolean;
  devices: CudaDevice[];
  /** Why it is not available ('' when it is). */
  reason: string;
  addonPath: string;
  runtimeVersion?: number;
  driverVersion?: number;
}

// dist/src/core/cuda/index.js and src/core/cuda/index.ts both sit four levels below the package root.
const packageRoot = path.resolve(__dirname, '..', '..', '..', '..');

/** Where the addon is looked for: DALLE_CUDA_ADDON, else build/Release/dalle_cuda.node in the package. */
export function cudaAddonPath(): string {
  return process.env.DALLE_CUDA_ADDON
    ? path.resolve(process.env.DALLE_CUDA_ADDON)
    : path.join(packageRoot, 'build', 'Release', 'dalle_cuda.node');
}

/** The build report next to the default addon, or null when the build never ran. */
export function cudaBuildReport(): CudaBuildReport | null {
  const file = path.join(packageRoot, 'build', 'Release', 'dalle_cuda.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as CudaBuildReport;
  } catch {
    return null;
  }
}

let state: { addon: CudaAddon | null; status: CudaStatus } | undefined;

function probe(): { addon: CudaAddon | null; status: CudaStatus } {
  const addonPath = cudaAddonPath();
  const status: CudaStatus = { built: false, loaded: false, available: false, devices: [], reason: '', addonPath };
  if (!fs.existsSync(addonPath)) {
    const report = cudaBuildReport();
    status.reason = report && !report.built
      ? `the CUDA addon was not built (${report.reason})`
      : `the CUDA addon is not built (no ${addonPath}; install nvcc and run \`npm run install\`)`;
    return { addon: null, status };
  }
  status.built = true;
  let addon: CudaAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    addon = require(addonPath) as CudaAddon;
  } catch (err) {
    status.reason = `the CUDA addon ${addonPath} did not load: ${(err as Error).message}`;
    return { addon: null, status };
  }
  status.loaded = true;
  const info = addon.info();
  status.runtimeVersion = info.runtimeVersion;
  status.driverVersion = info.driverVersion;
  status.devices = info.devices;
  status.available = info.devices.length > 0;
  if (!status.available) {
    status.reason = info.error
      ? `the CUDA addon found no usable GPU (${info.error})`
      : 'the CUDA addon found no GPU';
  }
  return { addon, status };
}

/** Whether the CUDA backend can run here and why not; loads the addon on the first call, never throws. */
export function cudaStatus(): CudaStatus {
  state ??= probe();
  return state.status;
}

/** The loaded addon with at least one device, or an Error saying why there is none. */
export function cudaAddon(): CudaAddon {
  state ??= probe();
  if (!state.addon || !state.status.available) throw new Error(`dalle: CUDA is not available: ${state.status.reason}`);
  return state.addon;
}

/** The loaded addon even without a device (for tests of the no-device path), or null when it did not load. */
export function cudaAddonIfLoaded(): CudaAddon | null {
  state ??= probe();
  return state.addon;
}
