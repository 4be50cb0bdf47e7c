// The prior's attention masks (docs/ARCHITECTURE.md "Models"; the paper's Section 2.3 / Figure 11).
// Key: Tt = text length (textLen), W = image grid side (gridSide), N = W * W image tokens, T = Tt + N positions,
// k = convolutional kernel (odd). Positions are full-sequence: 0 .. Tt-1 are text, Tt + r*W + c is image (r, c).
//   - text attends causally to text (padding positions are ordinary positions);
//   - every image token attends to every text token;
//   - image-to-image is causal (j <= i) and sparse:
//       row:    i - W <= j              (the row so far and the previous row back to the same column: W + 1 keys)
//       column: col(j) == col(i)        (the same column, rows above and itself)
//       conv:   |row(j) - row(i)| <= (k-1)/2 and |col(j) - col(i)| <= (k-1)/2
// The layer schedule (layers counted from 0): the last layer conv, layer % 4 == 1 column, row otherwise.
import { Tensor } from '../../tensor/tensor';

export type MaskKind = 'row' | 'column' | 'conv';

export interface MaskSpec {
  kind: MaskKind;
  /** Text positions (including padding positions), first in the sequence. */
  textLen: number;
  /** The image grid is gridSide x gridSide, in raster order after the text. */
  gridSide: number;
  /** Convolutional kernel side (odd); used by the 'conv' kind only. */
  convKernel: number;
}

const KINDS: readonly MaskKind[] = ['row', 'column', 'conv'];

/** Throws a clear error when a spec cannot describe a mask. */
export function checkMaskSpec(spec: MaskSpec, where = 'mask'): void {
  const { kind, textLen, gridSide, convKernel } = spec;
  if (!KINDS.includes(kind)) {
    throw new Error(`dalle: ${where}: unknown mask kind ${JSON.stringify(kind)}; use one of ${KINDS.join(', ')}`);
  }
  if (!Number.isInteger(textLen) || textLen < 0) {
    throw new Error(`dalle: ${where}: textLen must be an integer >= 0, got ${textLen}`);
  }
  if (!Number.isInteger(gridSide) || gridSide < 1) {
    throw new Error(`dalle: ${where}: gridSide must be an integer >= 1, got ${gridSide}`);
  }
  if (kind === 'conv' && (!Number.isInteger(convKernel) || convKernel < 1 || convKernel % 2 === 0)) {
    throw new Error(`dalle: ${where}: convKernel must be an odd integer >= 1 for a conv mask, got ${convKernel}`);
  }
}

/** T = textLen + gridSide^2. */
export function seqLen(spec: MaskSpec): number {
  return spec.textLen + spec.gridSide * spec.gridSide;
}

/** The mask kind of layer `layer` (from 0) of `nLayers`: the last conv, layer % 4 == 1 column, row otherwise. */
export function layerMaskKind(layer: number, nLayers: number): MaskKind {
  if (!Number.isInteger(nLayers) || nLayers < 1) throw new Error(`dalle: layerMaskKind: nLayers must be >= 1, got ${nLayers}`);
  if (!Number.isInteger(layer) || layer < 0 || layer >= nLayers) {
    throw new Error(`dalle: layerMaskKind: layer ${layer} is outside 0..${nLayers - 1}`);
  }
  if (layer === nLayers - 1) return 'conv';
  return layer % 4 === 1 ? 'column' : 'row';
}

/** The mask kind of every layer, in order. */
export function layerSchedule(nLayers: number): MaskKind[] {
  if (!Number.isInteger(nLayers) || nLayers < 1) throw new Error(`dalle: layerSchedule: nLayers must be >= 1, got ${nLayers}`);
  return Array.from({ length: nLayers }, (_, l) => layerMaskKind(l, nLayers));
}

/** Whether query position i may attend to key position j (both full-sequence positions, 0 <= i, j < T). */
export function isAllowed(spec: MaskSpec, i: number, j: number): boolean {
  checkMaskSpec(spec, 'isAllowed');
  const T = seqLen(spec);
  if (!Number.isInteger(i) || !Number.isInteger(j) || i < 0 || j < 0 || i >= T || j >= T) {
    throw new Error(`dalle: isAllowed: positions (${i}, ${j}) are outside 0..${T - 1}`);
  }
  return allowedUnchecked(spec, i, j);
}

function allowedUnchecked(spec: MaskSpec, i: number, j: number): boolean {
  const { textLen: Tt, gridSide: W } = spec;
  if (j > i) return false; // causal everywhere (text after text, text before image, image after image)
  if (j < Tt) return true; // text key: text queries causally, image queries always
  // Both are image positions (j >= Tt and i >= j).
  const a = i - Tt;
  const b = j - Tt;
  switch (spec.kind) {
    case 'row':
      return a - W <= b;
    case 'column':
      return a % W === b % W;
    case 'conv': {
      const h = (spec.convKernel - 1) / 2;
      const dr = Math.floor(a / W) - Math.floor(b / W);
      const dc = (a % W) - (b % W);
      return Math.abs(dr) <= h && Math.abs(dc) <= h;
    }
  }
}

/** The (T, T) i32 mask, 1 = allowed, for the dense `attention` op. */
export function denseMask(spec: MaskSpec): Tensor {
  checkMaskSpec(spec, 'denseMask');
  const T = seqLen(spec);
  const m = new Int32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) m[i * T + j] = allowedUnchecked(spec, i, j) ? 1 : 0;
  return Tensor.from(m, [T, T], 'i32');
}

/** The number of allowed (query, key) pairs. */
export function allowedPairs(spec: MaskSpec): number {
  checkMaskSpec(spec, 'allowedPairs');
  const T = seqLen(spec);
  let n = 0;
  for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) if (allowedUnchecked(spec, i, j)) n++;
  return n;
}
