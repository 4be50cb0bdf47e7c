/**
 * Checks a CLIP export against the engine: the L2-normalised embeddings of fixed captions (short, empty, non-ASCII,
 * and one longer than the context, so tokenisation, the end-of-text token and truncation are compared too) and of
 * seeded random images (N, 3, S, S) in [0, 1], through OnnxClip (tokenizer.json, preprocessor_config.json and both
 * graphs) and through the engine (the run's tokenizer, Clip.encodeText / encodeImage).
 */
import { embedImages, embedTexts } from '../models/clip/embed';
import type { LoadedClip } from '../models/clip/load';
import { OnnxClip } from './clip-runner';
import { maxAbsDiff, uniform } from './verify';

export interface ClipVerification {
  readonly captions: number;
  readonly images: number;
  readonly textMaxAbsDiff: number;
  readonly imageMaxAbsDiff: number;
}

export const CLIP_CHECK_CAPTIONS: readonly string[] = [
  'red apple, noto style',
  '',
  'Grinning Face With Big Eyes, twemoji style',
  'café ☕ ünïcödé, openmoji style',
  Array.from({ length: 40 }, (_, i) => ['cat', 'dog', 'rocket', 'flag of japan'][i % 4]).join(' '), // past the context
];

/** onnxruntime's embeddings, one row each, against the engine's (rows, E) row-major. */
function rowsMaxAbsDiff(rows: readonly Float32Array[], flat: Float32Array): number {
  const E = rows[0]?.length ?? 0;
  if (rows.length * E !== flat.length || rows.some((r) => r.length !== E)) throw new Error(`dalle: CLIP check: ${rows.length} x ${E} values from onnxruntime, ${flat.length} from the engine`);
  const joined = new Float32Array(flat.length);
  rows.forEach((r, i) => joined.set(r, i * E));
  return maxAbsDiff(joined, flat);
}

export async function verifyClipExport(clip: LoadedClip, runner: OnnxClip, options: { images?: number; seed?: number; captions?: readonly string[] } = {}): Promise<ClipVerification> {
  const captions = options.captions ?? CLIP_CHECK_CAPTIONS;
  const N = options.images ?? 3;
  const S = clip.model.arch.resolution;
  const rnd = uniform(options.seed ?? 0);
  const pixels = Float32Array.from({ length: N * 3 * S * S }, rnd);
  const textMaxAbsDiff = rowsMaxAbsDiff(await runner.embedTexts(captions), embedTexts(clip, captions));
  const imageMaxAbsDiff = rowsMaxAbsDiff(await runner.embedImages({ pixels, shape: [N, 3, S, S] }), embedImages(clip.model, pixels, N));
  return { captions: captions.length, images: N, textMaxAbsDiff, imageMaxAbsDiff };
}
