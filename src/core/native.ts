// Loads the C++ addon (build/Release/dalle_native.node, built by `npm ci` through node-gyp).
// Tensor data crosses as numeric addresses (see tensor/storage.ts); every kernel is a plain function on the addon.
import * as path from 'path';

export interface AllocStats {
  bytesInUse: number;
  bytesCached: number;
  peakBytesInUse: number;
  allocs: number;
  cacheHits: number;
  osAllocs: number;
}

export interface CpuInfo {
  avx2: boolean;
  avx512: boolean;
  avx512bf16: boolean;
  isa: 'portable' | 'avx2' | 'avx512';
}

/** The addon's memory and thread entry points; kernels are looked up by name through `kernel()`. */
export interface NativeAddon {
  alloc(bytes: number): number;
  free(address: number, bytes: number): void;
  sizeClass(bytes: number): number;
  allocStats(): AllocStats;
  trim(): void;
  resetPeak(): void;
  minorFaults(): number;
  copyIn(address: number, data: ArrayBufferView): void;
  copyOut(address: number, data: ArrayBufferView): void;
  memcpy(dst: number, src: number, bytes: number): void;
  setThreads(n: number): number;
  numThreads(): number;
  cpuInfo(): CpuInfo;
  setIsa(isa: 'portable' | 'avx2' | 'avx512'): string;
  stridedCopy(dst: number, src: number, itemBytes: number, shape: number[], dstStrides: number[], srcStrides: number[]): void;
  fill(dst: number, count: number, value: number, kind: 'f32' | 'i32' | 'u16'): void;
  cast(dst: number, dstDtype: string, src: number, srcDtype: string, count: number): void;
  [kernel: string]: unknown;
}

const candidates = ['build/Release/dalle_native.node', 'build/Debug/dalle_native.node'];

function load(): NativeAddon {
  // DALLE_ADDON=path loads another build (e.g. a copy kept for benchmarking while build/ is being rebuilt).
  if (process.env.DALLE_ADDON) return require(path.resolve(process.env.DALLE_ADDON)) as NativeAddon;
  // dist/src/core/native.js and src/core/native.ts both sit three levels below the package root.
  const root = path.resolve(__dirname, '..', '..', '..');
  const tried: string[] = [];
  for (const rel of candidates) {
    const file = path.join(root, rel);
    tried.push(file);
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      return require(file) as NativeAddon;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  throw new Error(
    `dalle: the native addon is not built (looked for ${tried.join(', ')}). ` +
      'Run `npm ci` (or `npm run install`) in the package directory to build it; it needs python3, make and a C++17 compiler.',
  );
}

export const native: NativeAddon = load();

/** A kernel by name, typed by the caller; a missing kernel is a clear error rather than "undefined is not a function". */
export function kernel<F extends (...args: never[]) => unknown>(name: string): F {
  const fn = native[name];
  if (typeof fn !== 'function') {
    throw new Error(`dalle: the native addon has no kernel '${name}' (rebuild it with \`npm run install\`)`);
  }
  return fn as F;
}

/** Sets the kernel thread count (0 = DALLE_THREADS or all cores). Returns the count in effect. */
export function setThreads(n: number): number {
  return native.setThreads(n);
}
