/**
 * Training the small CLIP on image + caption pairs, saving and loading a run, and the run as a feature extractor.
 *
 * A run directory holds clip.json (the architecture and the tokenizer file), tokenizer.json (trained on the data's
 * captions when none is given), metrics.jsonl, and checkpoints/step-N (model, optimizer, state: the project's
 * checkpoint format, `latest` pointing at the newest). Batches come from the shared seeded loader; each batch's
 * captions are tokenized without dropout. What is missing compared with train-dvae: exact resume (a run always starts
 * from scratch) and Ctrl-C checkpoints.
 * Key: B = batch, L = context, R = image side, E = embedding size.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DataLoader, openDataSource } from '../../data';
import { DataError } from '../../data/errors';
import { EventSink, silentSink } from '../../events';
import { native } from '../../native';
import { writeFileAtomicSync } from '../../io/atomic';
import { Tensor, backward, noGrad, tidy, zeroGrad } from '../../tensor';
import { Philox } from '../../tensor/rng';
import { TextTokenizer } from '../../text';
import { AdamW } from '../../train/adamw';
import { CheckpointError, loadCheckpointModel, resolveCheckpoint, writeCheckpoint } from '../../train/checkpoint';
import { warmupCosine } from '../../train/schedule';
import { CLIP_EMOJI_ARCH, Clip, ClipArch, clipDecays, l2Normalize } from './model';

export const CLIP_INFO_FILE = 'clip.json';
export const CLIP_TOKENIZER_FILE = 'tokenizer.json';
export const CLIP_FORMAT = 'dalle-clip-1';

export interface ClipRunInfo {
  readonly format: typeof CLIP_FORMAT;
  readonly arch: ClipArch;
  readonly tokenizer: string;
  readonly lowercase: boolean;
}

export interface ClipTrainOptions {
  readonly data: string;
  readonly out: string;
  readonly steps: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly weightDecay: number;
  readonly warmupSteps: number;
  readonly seed: number;
  /** An existing tokenizer.json; otherwise one of `vocab` tokens is trained on the data's captions. */
  readonly tokenizer?: string;
  readonly vocab?: number;
  readonly arch?: Partial<Omit<ClipArch, 'vocab'>>;
  readonly logEvery?: number;
  readonly checkpointEvery?: number;
  readonly events?: EventSink;
}

export interface ClipTrainResult {
  readonly steps: number;
  readonly loss: number;
  /** Top-1 accuracy of image -> caption within the last logged batch. */
  readonly batchAccuracy: number;
  readonly checkpoint: string;
  readonly parameters: number;
  readonly seconds: number;
}

/** Trains a CLIP into `out` and returns where its final checkpoint is. */
export async function trainClip(options: ClipTrainOptions): Promise<ClipTrainResult> {
  const events = options.events ?? silentSink;
  const out = options.out;
  fs.mkdirSync(out, { recursive: true });
  const source = await openDataSource(options.data, { requireCaptions: true });
  if (source.records.length < 2) {
    throw new DataError(`${options.data} has ${source.records.length} images with captions; CLIP needs pairs`, 'give a folder of images with .txt captions, or a manifest with captions');
  }
  let tokenizer: TextTokenizer;
  const tokenizerFile = path.join(out, CLIP_TOKENIZER_FILE);
  if (options.tokenizer) {
    tokenizer = TextTokenizer.load(options.tokenizer);
  } else {
    events.emit({ type: 'stage', name: 'tokenizer', detail: `training ${options.vocab ?? 1024} tokens on ${source.records.length} captions` });
    const captions = source.records.flatMap((r) => r.captions);
    tokenizer = await TextTokenizer.train(captions, { vocabSize: options.vocab ?? 1024, lowercase: true });
  }
  tokenizer.save(tokenizerFile);
  const arch: ClipArch = { ...CLIP_EMOJI_ARCH, ...options.arch, vocab: tokenizer.vocabSize };
  const info: ClipRunInfo = { format: CLIP_FORMAT, arch, tokenizer: CLIP_TOKENIZER_FILE, lowercase: tokenizer.lowercase };
  writeFileAtomicSync(path.join(out, CLIP_INFO_FILE), `${JSON.stringify(info, null, 2)}\n`);

  const rng = new Philox(options.seed);
  const model = new Clip(arch, rng.fork(1));
  const named = model.namedParameters();
  const group = (decay: boolean) => named.filter(([n]) => clipDecays(n) === decay).map(([name, tensor]) => ({ name, tensor }));
  const optimizer = new AdamW([{ params: group(true) }, { params: group(false), weightDecay: 0 }], {
    lr: options.lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: options.weightDecay,
  });
  const batchSize = Math.min(options.batchSize, source.records.length);
  const loader = new DataLoader(source, { batchSize, resolution: arch.resolution, seed: options.seed, shuffle: true });
  const lr = warmupCosine(options.lr, options.lr * 0.05, Math.min(options.warmupSteps, options.steps), options.steps);
  const metricsFile = path.join(out, 'metrics.jsonl');
  fs.writeFileSync(metricsFile, '');
  const logEvery = options.logEvery ?? 10;
  const started = performance.now();
  let last = { loss: NaN, accuracy: NaN };
  let checkpoint = '';
  const save = (step: number): void => {
    checkpoint = writeCheckpoint(out, {
      model: named,
      optimizer: optimizer.stateTensors(),
      state: { kind: 'clip', step, optimizer_step: optimizer.step, rng: {}, data: loader.state(), metrics: {} },
    });
    events.emit({ type: 'artifact', kind: 'checkpoint', path: checkpoint });
  };
  try {
    events.emit({ type: 'stage', name: 'training', detail: `${model.parameterCount()} parameters, ${options.steps} updates of ${batchSize} pairs` });
    for (let step = 0; step < options.steps; step++) {
      const batch = await loader.next();
      const packed = batch.captions.map((c) => model.packTokens(tokenizer.encode(c)));
      const values = tidy(() => {
        const pixels = Tensor.from(batch.images, batch.shape);
        const tokens = Tensor.from(concatRows(packed.map((p) => p.row)), [batchSize, arch.context], 'i32');
        zeroGrad(model.parameters());
        const { loss, logits } = model.loss(pixels, tokens, packed.map((p) => p.end));
        backward(loss);
        optimizer.update(lr(step));
        return { loss: loss.item(), accuracy: diagonalAccuracy(logits.toArray() as Float32Array, batchSize) };
      });
      clampLogitScale(model);
      if (!Number.isFinite(values.loss)) throw new Error(`dalle: the CLIP loss became ${values.loss} at update ${step + 1}; lower --lr`);
      last = values;
      const done = step + 1;
      if (done % logEvery === 0 || done === options.steps) {
        const line = { step: done, loss: values.loss, batch_accuracy: values.accuracy, lr: lr(step), temperature: 1 / Math.exp(model.logitScale.item()), seconds: (performance.now() - started) / 1000 };
        fs.appendFileSync(metricsFile, `${JSON.stringify(line)}\n`);
        events.emit({ type: 'metrics', step: done, split: 'train', values: { loss: values.loss, batch_accuracy: values.accuracy } });
      }
      events.emit({ type: 'progress', task: 'train-clip', step: done, total: options.steps, unit: 'update', metrics: { loss: values.loss } });
      if (options.checkpointEvery && done % options.checkpointEvery === 0 && done < options.steps) save(done);
    }
    events.emit({ type: 'done', task: 'train-clip' });
    save(options.steps);
    return {
      steps: options.steps,
      loss: last.loss,
      batchAccuracy: last.accuracy,
      checkpoint,
      parameters: model.parameterCount(),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    loader.close();
    optimizer.dispose();
    model.dispose();
  }
}

/** CLIP clips exp(t) at 100 so the logits cannot blow up; the parameter is set back after any update past it. */
function clampLogitScale(model: Clip): void {
  const max = Math.log(100);
  if (model.logitScale.item() > max) {
    native.copyIn(model.logitScale.address, Float32Array.of(max));
  }
}

function concatRows(rows: readonly Int32Array[]): Int32Array {
  const out = new Int32Array(rows.reduce((s, r) => s + r.length, 0));
  let o = 0;
  for (const r of rows) {
    out.set(r, o);
    o += r.length;
  }
  return out;
}

/** Fraction of rows of a (B, B) logit matrix whose largest entry is on the diagonal. */
export function diagonalAccuracy(logits: ArrayLike<number>, B: number): number {
  let hits = 0;
  for (let i = 0; i < B; i++) {
    let best = 0;
    for (let j = 1; j < B; j++) if (logits[i * B + j] > logits[i * B + best]) best = j;
    if (best === i) hits++;
  }
  return hits / B;
}

/** A trained CLIP, loaded from a run directory or a checkpoint directory. */
export interface LoadedClip {
  readonly model: Clip;
  readonly tokenizer: TextTokenizer;
  readonly runDir: string;
  readonly checkpoint: string;
  readonly step: number;
}

export function loadClip(target: string): LoadedClip {
  const resolved = resolveCheckpoint(target);
  if (resolved.state.kind !== 'clip') {
    throw new CheckpointError(`${resolved.dir} is a ${resolved.state.kind} checkpoint, not a CLIP one`, 'give a run directory made by `dalle train-clip`');
  }
  const infoFile = path.join(resolved.runDir, CLIP_INFO_FILE);
  if (!fs.existsSync(infoFile)) throw new CheckpointError(`${resolved.runDir} has no ${CLIP_INFO_FILE}`, 'give a run directory made by `dalle train-clip`');
  const info = JSON.parse(fs.readFileSync(infoFile, 'utf8')) as ClipRunInfo;
  if (info.format !== CLIP_FORMAT) throw new CheckpointError(`${infoFile} has format ${JSON.stringify(info.format)}, expected ${CLIP_FORMAT}`, 'train the CLIP again with this version of dalle');
  const tokenizer = TextTokenizer.load(path.join(resolved.runDir, info.tokenizer));
  const model = new Clip(info.arch, new Philox(0));
  try {
    loadCheckpointModel(resolved.dir, new Map(model.namedParameters()));
  } catch (error) {
    model.dispose();
    throw error;
  }
  return { model, tokenizer, runDir: resolved.runDir, checkpoint: resolved.dir, step: resolved.state.step };
}

/** L2-normalised text embeddings (N, E) of captions, in batches. */
export function embedTexts(clip: LoadedClip, captions: readonly string[], batch = 64): Float32Array {
  const { model } = clip;
  const E = model.arch.embed;
  const out = new Float32Array(captions.length * E);
  for (let start = 0; start < captions.length; start += batch) {
    const part = captions.slice(start, start + batch);
    const packed = part.map((c) => model.packTokens(clip.tokenizer.encode(c)));
    const data = noGrad(() =>
      tidy(() => {
        const tokens = Tensor.from(concatRows(packed.map((p) => p.row)), [part.length, model.arch.context], 'i32');
        return l2Normalize(model.encodeText(tokens, packed.map((p) => p.end))).toArray() as Float32Array;
      }),
    );
    out.set(data, start * E);
  }
  return out;
}

/** L2-normalised image embeddings (N, E) of pixels (N, 3, R, R) in [0, 1]. */
export function embedImages(model: Clip, pixels: Float32Array, count: number): Float32Array {
  return noGrad(() =>
    tidy(() => {
      const R = model.arch.resolution;
      return l2Normalize(model.encodeImage(Tensor.from(pixels, [count, 3, R, R]))).toArray() as Float32Array;
    }),
  );
}
