/**
 * A trained CLIP from its run directory (`dalle train-clip --out RUN`):
 *
 *   RUN/clip.json            the architecture, the tokenizer file and the settings it was trained with
 *   RUN/tokenizer.json       the caption tokenizer
 *   RUN/best                 one line, `checkpoints/step-N`: the checkpoint with the best validation retrieval
 *   RUN/latest, RUN/checkpoints/step-N/model.safetensors   the weights (src/core/checkpoint)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, loadCheckpointModel, resolveCheckpoint } from '../../checkpoint';
import { TextFileError } from '../../io/errors';
import { readTextFileSync, TEXT_LIMITS } from '../../io/text-file';
import type { Device } from '../../tensor';
import { Philox } from '../../tensor/rng';
import { TextTokenizer } from '../../text';
import { Clip, ClipArch } from './model';

export const CLIP_INFO_FILE = 'clip.json';
export const CLIP_TOKENIZER_FILE = 'tokenizer.json';
export const CLIP_FORMAT = 'dalle-clip-1';
/** RUN/best: one line, `checkpoints/step-N`, the checkpoint with the best validation retrieval. */
export const CLIP_BEST_FILE = 'best';

/** RUN/clip.json. */
export interface ClipRunInfo {
  readonly format: typeof CLIP_FORMAT;
  readonly arch: ClipArch;
  readonly tokenizer: string;
  readonly lowercase: boolean;
  /** The training settings (train/clip-trainer.ts), which --resume continues with; absent from older runs. */
  readonly train?: Readonly<Record<string, unknown>>;
}

/** A trained CLIP, loaded from a run directory or a checkpoint directory. */
export interface LoadedClip {
  readonly model: Clip;
  readonly tokenizer: TextTokenizer;
  /** The tokenizer.json it was loaded from. */
  readonly tokenizerFile: string;
  readonly runDir: string;
  readonly checkpoint: string;
  readonly step: number;
}

/**
 * Opens a CLIP: a checkpoint directory, or a run directory: its best checkpoint by validation (RUN/best, written when
 * it was trained with a validation set), else its latest.
 */
export function loadClip(target: string, device: Device = 'cpu'): LoadedClip {
  const bestFile = path.join(target, CLIP_BEST_FILE);
  let pointed = target;
  if (fs.existsSync(bestFile) && !fs.existsSync(path.join(target, 'state.json'))) {
    const pointer = readTextFileSync(bestFile, TEXT_LIMITS.runMetadata).trim();
    if (!/^checkpoints\/step-\d+$/.test(pointer)) {
      throw new CheckpointError(`${bestFile} should hold 'checkpoints/step-N', it holds ${JSON.stringify(pointer.slice(0, 80))}`, `remove it to use the latest checkpoint, or write a checkpoint's path into it`);
    }
    pointed = path.join(target, pointer);
  }
  const resolved = resolveCheckpoint(pointed, 'clip');
  if (resolved.state.kind !== 'clip') {
    throw new CheckpointError(`${resolved.dir} is a ${resolved.state.kind} checkpoint, not a CLIP one`, 'give a run directory made by `dalle train-clip`');
  }
  const info = readClipRunInfo(resolved.runDir);
  const tokenizerFile = path.join(resolved.runDir, info.tokenizer);
  const tokenizer = TextTokenizer.load(tokenizerFile);
  const model = new Clip(info.arch, new Philox(0));
  try {
    loadCheckpointModel(resolved.dir, new Map(model.namedParameters()));
    model.to(device); // read on the host (the same files on every device), moved once
  } catch (error) {
    model.dispose();
    throw error;
  }
  return { model, tokenizer, tokenizerFile, runDir: resolved.runDir, checkpoint: resolved.dir, step: resolved.state.step };
}

/** RUN/clip.json, checked for its format. */
export function readClipRunInfo(runDir: string): ClipRunInfo {
  const infoFile = path.join(runDir, CLIP_INFO_FILE);
  if (!fs.existsSync(infoFile)) throw new CheckpointError(`${runDir} has no ${CLIP_INFO_FILE}`, 'give a run directory made by `dalle train-clip`');
  let info: ClipRunInfo;
  try {
    info = JSON.parse(readTextFileSync(infoFile, TEXT_LIMITS.runMetadata)) as ClipRunInfo;
  } catch (error) {
    if (error instanceof TextFileError) throw error;
    throw new CheckpointError(`${infoFile} is not valid JSON (${error instanceof Error ? error.message : String(error)})`, 'give a run directory made by `dalle train-clip`, or train the CLIP again');
  }
  if (info.format !== CLIP_FORMAT) throw new CheckpointError(`${infoFile} has format ${JSON.stringify(info.format)}, expected ${CLIP_FORMAT}`, 'train the CLIP again with this version of dalle');
  return info;
}
