/**
 * Checks a CLIP export against the engine: the L2-normalised embeddings of fixed captions (short, empty, non-ASCII,
 * and one longer than the context, so tokenisation, the end-of-text token and truncation are compared too) and of
 * seeded random images (N, 3, S, S) in [0, 1], through OnnxClip (tokenizer.json, preprocessor_config.json and both
 * graphs) and through the engine (the run's tokenizer, Clip.encodeText / encodeImage).
 */
import { LoadedClip, embedImages, embedTexts } from '../models/clip/train';
import { OnnxClip } from './clip-runner';

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

/** mulberry32: the check's images depend only on `seed`. */
function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function maxAbsDiff(rows: readonly Float32Array[], flat: Float32Array): number {
  const E = rows[0]?.length ?? 0;
  if (rows.length * E !== flat.length) throw new Error(`dalle: CLIP check: ${rows.length} x ${E} values from onnxruntime, ${flat.length} from the engine`);
  let m = 0;
  rows.forEach((r, i) => {
    for (let e = 0; e < E; e++) m = Math.max(m, Math.abs(r[e] - flat[i * E + e]));
  });
  return m;
}

export async function verifyClipExport(clip: LoadedClip, runner: OnnxClip, options: { images?: number; seed?: number; captions?: readonly string[] } = {}): Promise<ClipVerification> {
  const captions = options.captions ?? CLIP_CHECK_CAPTIONS;
  const N = options.images ?? 3;
  const S = clip.model.arch.resolution;
  const rnd = uniform(options.seed ?? 0);
  const pixels = Float32Array.from({ length: N * 3 * S * S }, rnd);
  const textMaxAbsDiff = maxAbsDiff(await runner.embedTexts(captions), embedTexts(clip, captions));
  const imageMaxAbsDiff = maxAbsDiff(await runner.embedImages({ pixels, shape: [N, 3, S, S] }), embedImages(clip.model, pixels, N));
  return { captions: captions.length, images: N, textMaxAbsDiff, imageMaxAbsDiff };
}
