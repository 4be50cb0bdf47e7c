/**
 * A CLIP as a scorer of (caption, image) pairs: what reranking (src/core/sample/rerank.ts) and `dalle evaluate
 * clip-score` use. One function opens a model, `openClipScorer(path)`; today it opens a dalle CLIP run directory
 * (`dalle train-clip`) or one of its checkpoint directories. Other kinds of CLIP (an ONNX export) belong behind the
 * same function and the same small interface.
 *
 * The CLIP score of a pair is 100 * max(cos(image, caption), 0) (Hessel et al., 2021, as torchmetrics computes it).
 * Images come as float planes in [0, 1], (N, 3, H, W) at any size; the scorer brings them to its own side with the
 * same resize as the training loader (sharp, "cover", centre crop, on 8-bit values), so a 64 px PNG scored here and
 * the same PNG read by `dalle evaluate clip-score` give the same embedding.
 * Key: N = images or captions, E = embedding size, S = the scorer's image side.
 */
import * as path from 'node:path';
import sharp from 'sharp';
import type { Device } from '../../tensor';
import { embedImages, embedTexts } from './embed';
import { LoadedClip, loadClip } from './load';

/** Images (N, 3, H, W), float, values in [0, 1]. */
export interface ImageBatch {
  readonly pixels: Float32Array;
  readonly shape: readonly [number, number, number, number];
}

export interface ClipScorer {
  /** Identifies the model in records and reports (scores from different scorers are not comparable). */
  readonly name: string;
  /** Side of the square images the model sees (inputs of other sizes are resized to it). */
  readonly imageSize: number;
  /** Extra facts for reports (a dalle CLIP: checkpoint, step). */
  readonly details: Readonly<Record<string, string | number>>;
  /** L2-normalised text embeddings, one (E) vector per caption. */
  embedTexts(captions: readonly string[]): Promise<Float32Array[]>;
  /** L2-normalised image embeddings, one (E) vector per image of `images` (N, 3, H, W) in [0, 1]. */
  embedImages(images: ImageBatch): Promise<Float32Array[]>;
  dispose(): Promise<void>;
}

/** 100 * max(cos, 0) of two L2-normalised embeddings. */
export function clipScoreOf(text: Float32Array, image: Float32Array): number {
  if (text.length !== image.length) throw new RangeError(`clipScoreOf: embeddings of ${text.length} and ${image.length} values`);
  let dot = 0;
  for (let e = 0; e < text.length; e++) dot += text[e] * image[e];
  return 100 * Math.max(dot, 0);
}

/**
 * Opens a CLIP for scoring: a `dalle train-clip` run directory (its latest checkpoint) or a checkpoint directory, on
 * `device` (the ONNX runtime's folders run on its own CPU provider).
 */
export async function openClipScorer(target: string, device: Device = 'cpu'): Promise<ClipScorer> {
  // A Hugging Face-style ONNX CLIP folder (text_model.onnx + vision_model.onnx or model.onnx): src/core/onnx/clip-runner.ts.
  const onnx = await import('../../onnx/clip-runner');
  if (onnx.isOnnxClipFolder(target)) return onnx.openOnnxClipScorer(target);
  return new DalleClipScorer(loadClip(target, device));
}

class DalleClipScorer implements ClipScorer {
  readonly name: string;
  readonly imageSize: number;
  readonly details: Readonly<Record<string, string | number>>;

  constructor(private readonly clip: LoadedClip) {
    this.name = `dalle-clip:${path.resolve(clip.checkpoint)}`;
    this.imageSize = clip.model.arch.resolution;
    this.details = { checkpoint: clip.checkpoint, step: clip.step };
  }

  async embedTexts(captions: readonly string[]): Promise<Float32Array[]> {
    return splitRows(embedTexts(this.clip, captions), captions.length);
  }

  async embedImages(images: ImageBatch): Promise<Float32Array[]> {
    const N = images.shape[0];
    if (N === 0) return [];
    const S = this.imageSize;
    const pixels = await resizeImages(images, S);
    const out: Float32Array[] = [];
    const batch = 64; // bounds the activations of the image tower
    for (let start = 0; start < N; start += batch) {
      const n = Math.min(batch, N - start);
      out.push(...splitRows(embedImages(this.clip.model, pixels.subarray(start * 3 * S * S, (start + n) * 3 * S * S), n), n));
    }
    return out;
  }

  async dispose(): Promise<void> {
    this.clip.model.dispose();
  }
}

function splitRows(data: Float32Array, rows: number): Float32Array[] {
  const E = rows ? data.length / rows : 0;
  return Array.from({ length: rows }, (_, i) => data.slice(i * E, (i + 1) * E));
}

/**
 * (N, 3, H, W) in [0, 1] -> (N, 3, S, S): returned as is when H = W = S; otherwise each image is rounded to 8 bits and
 * resized by sharp as the training loader does (short side to S, centre crop).
 */
export async function resizeImages(images: ImageBatch, S: number): Promise<Float32Array> {
  const [N, C, H, W] = images.shape;
  if (C !== 3) throw new RangeError(`CLIP images need 3 channels, got ${C}`);
  if (images.pixels.length !== N * C * H * W) throw new RangeError(`${images.pixels.length} values are not (${N}, ${C}, ${H}, ${W}) images`);
  if (H === S && W === S) return images.pixels;
  const out = new Float32Array(N * 3 * S * S);
  const plane = H * W;
  await Promise.all(
    Array.from({ length: N }, async (_, n) => {
      const hwc = Buffer.alloc(plane * 3);
      const base = n * 3 * plane;
      for (let p = 0; p < plane; p++) {
        for (let c = 0; c < 3; c++) hwc[p * 3 + c] = Math.round(Math.min(1, Math.max(0, images.pixels[base + c * plane + p])) * 255);
      }
      const resized = await sharp(hwc, { raw: { width: W, height: H, channels: 3 } }).resize(S, S, { fit: 'cover', position: 'centre' }).raw().toBuffer();
      const o = n * 3 * S * S;
      for (let p = 0; p < S * S; p++) for (let c = 0; c < 3; c++) out[o + c * S * S + p] = resized[p * 3 + c] / 255;
    }),
  );
  return out;
}
