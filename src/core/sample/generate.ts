/**
 * Batch generation: captions -> image tokens (sampler.ts) -> PNGs through the dVAE, with results.jsonl and an
 * index.html gallery (output.ts), sharding and seeds (plan.ts). What `dalle generate` calls.
 *
 * A rerun into the same folder skips every unit whose PNG is complete and whose record is in results.jsonl (both are
 * needed: a crash between writing the PNG and its record regenerates that unit, identically, since its tokens depend
 * only on (seed, caption, sample)).
 * Key: B = batch rows, Tt = text_len, N = grid side^2, r = prompted tokens (keep_rows * grid side).
 */
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { EventSink, silentSink } from '../events';
import { planesToRgb, writePng } from '../image/grid';
import type { TrainedDvae } from '../models/dvae/load';
import { Tensor, noGrad, tidy } from '../tensor';
import { CheckpointError } from '../checkpoint';
import { SamplingError, SamplingOptions, checkSamplingOptions } from './filters';
import { GenerationSettings, ResultRecord, appendResult, claimOutputDir, isCompletePng, readResults, writeGallery, RESULTS_FILE } from './output';
import { Shard, Unit, WHOLE_JOB, shardUnits, unitFileName, unitRng } from './plan';
import { AsyncStepPrior, PriorDims, PriorLike, asyncSteps, sampleImageTokensAsync } from './sampler';

/** A caption list or prompt that cannot be used; `hint` says what to do. Exit code 4 (input). */
export class CaptionError extends Error {
  override readonly name = 'CaptionError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export interface ImagePrompt {
  /** (gridSide, gridSide) i32 codes of the prompt image. */
  readonly grid: Int32Array;
  /** The top rows kept as the prefix, 1 <= keepRows < gridSide. */
  readonly keepRows: number;
  /** Where it came from (for messages). */
  readonly source: string;
}

export interface GenerateJob {
  /** The engine's prior, or an asynchronous one (onnxruntime: src/core/onnx/generate-models.ts); the same sampling. */
  readonly prior: PriorLike | AsyncStepPrior;
  /** Caption -> text token ids (no padding); the prior's tokenizer, lower-casing included if the prior wants it. */
  readonly encodeText: (caption: string) => number[];
  readonly dvae: TrainedDvae;
  /**
   * Decodes codes (n, h, w) i32 to images (n, 3, R, R) in [0, 1] elsewhere than the engine's dVAE (onnxruntime for
   * --runtime onnx); default: dvae.model.decode.
   */
  readonly decodeBatch?: (codes: Int32Array, count: number) => Promise<Float32Array>;
  /** Which networks run (recorded in generation.json; default engine). */
  readonly runtime?: 'engine' | 'onnx';
  readonly captions: readonly string[];
  readonly samples: number;
  readonly batch: number;
  readonly sampling: SamplingOptions;
  readonly condScale: number;
  readonly seed: number;
  readonly shard?: Shard;
  readonly prompt?: ImagePrompt;
  readonly out: string;
  /** Identify the models in generation.json (checkpoint directories). */
  readonly priorId: string;
  readonly dvaeId: string;
  readonly events?: EventSink;
  /** Checked before each batch: true stops after the images written so far (Ctrl-C); a rerun finishes the job. */
  readonly shouldStop?: () => boolean;
}

export interface GenerateSummary {
  readonly out: string;
  readonly shard: { index: number; count: number; source: string };
  /** Units of this shard, those generated now, and those already done by an earlier run. */
  readonly units: number;
  readonly generated: number;
  readonly skipped: number;
  /** Image tokens sampled per second (prompted tokens excluded), over the sampling loop only. */
  readonly tokensPerSecond: number;
  readonly seconds: number;
  readonly results: string;
  readonly gallery: string;
  /** Captions cut to text_len tokens. */
  readonly truncated: number[];
  readonly files: string[];
  /** Stopped early by shouldStop (the gallery and results cover what was written). */
  readonly stopped: boolean;
}

/** (Tt) i32: ids, then the per-position pad tokens textVocab + p. */
export function padCaption(ids: readonly number[], textLen: number, textVocab: number): Int32Array {
  const out = new Int32Array(textLen);
  for (let p = 0; p < textLen; p++) out[p] = p < ids.length ? ids[p] : textVocab + p;
  return out;
}

/** Checks that the dVAE decodes the prior's image tokens (same grid side and vocabulary). */
export function checkModelsMatch(prior: PriorDims, dvae: TrainedDvae): void {
  const vocab = dvae.model.arch.vocab_size;
  if (prior.gridSide !== dvae.gridSide || prior.imageVocab !== vocab) {
    throw new CheckpointError(
      `the prior makes ${prior.gridSide}x${prior.gridSide} grids of ${prior.imageVocab} codes, but the dVAE decodes ${dvae.gridSide}x${dvae.gridSide} grids of ${vocab} codes`,
      'use the dVAE the prior was trained on (--dvae RUN, the run whose tokens trained the prior)',
    );
  }
}

function sha256(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The rows an image prompt keeps: at least 1, and fewer than the grid's (a usage error, exit code 2). */
export function checkKeepRows(keepRows: number, gridSide: number): void {
  if (Number.isSafeInteger(keepRows) && keepRows >= 1 && keepRows < gridSide) return;
  throw new SamplingError(
    `--keep-rows must be in 1..${gridSide - 1} (the dVAE's token grid has ${gridSide} rows), got ${keepRows}`,
    `keep e.g. ${Math.floor(gridSide / 2)} rows: the prior completes the rest`,
  );
}

export async function runGeneration(job: GenerateJob): Promise<GenerateSummary> {
  const events = job.events ?? silentSink;
  const { dvae, captions, samples, batch, seed, out } = job;
  const prior: AsyncStepPrior = 'async' in job.prior ? job.prior : asyncSteps(job.prior);
  const shard = job.shard ?? WHOLE_JOB;
  checkSamplingOptions(job.sampling);
  if (captions.length === 0) throw new CaptionError('no captions to generate from', 'give captions as arguments, or --captions FILE with one caption per line');
  if (!(Number.isSafeInteger(samples) && samples >= 1)) throw new RangeError(`samples must be an integer >= 1, got ${samples}`);
  if (!(Number.isSafeInteger(batch) && batch >= 1)) throw new RangeError(`batch must be an integer >= 1, got ${batch}`);
  checkModelsMatch(prior, dvae);
  const { textLen: Tt, textVocab, gridSide } = prior;
  const N = gridSide * gridSide;

  // Text: every caption tokenized once; longer than text_len -> cut, with a warning (the prior has no positions for more).
  const truncated: number[] = [];
  const texts = captions.map((caption, i) => {
    const ids = job.encodeText(caption);
    if (ids.length > Tt) {
      truncated.push(i);
      events.emit({ type: 'log', level: 'warn', message: `caption ${i} has ${ids.length} tokens; the prior reads ${Tt}, so it was cut to the first ${Tt} ("${caption.slice(0, 60)}${caption.length > 60 ? '...' : ''}")` });
    }
    return padCaption(ids.slice(0, Tt), Tt, textVocab);
  });

  let prefix = new Int32Array(0);
  if (job.prompt) {
    const { grid, keepRows } = job.prompt;
    if (grid.length !== N) throw new CaptionError(`the image prompt has ${grid.length} codes; the prior needs a ${gridSide}x${gridSide} grid`, 'encode it with the dVAE the prior was trained on');
    checkKeepRows(keepRows, gridSide);
    prefix = grid.slice(0, keepRows * gridSide);
  }
  const r = prefix.length;

  const settings: GenerationSettings = {
    prior: job.priorId,
    dvae: job.dvaeId,
    seed,
    samples,
    temperature: job.sampling.temperature,
    top_k: job.sampling.topK,
    top_p: job.sampling.topP,
    cond_scale: job.condScale,
    captions_sha256: sha256(captions.join('\n')),
    captions: captions.length,
    prompt: job.prompt ? { tokens_sha256: sha256(new Uint8Array(job.prompt.grid.buffer, job.prompt.grid.byteOffset, job.prompt.grid.byteLength)), keep_rows: job.prompt.keepRows } : null,
    runtime: job.runtime ?? 'engine',
  };
  claimOutputDir(out, settings);

  const units = shardUnits(captions.length, samples, shard);
  const R = dvae.resolution;
  const done = new Set(readResults(out).filter((rec) => rec.seed === seed).map((rec) => `${rec.caption_index}/${rec.sample}`));
  const todo = units.filter((u) => !(done.has(`${u.caption}/${u.sample}`) && isCompletePng(path.join(out, unitFileName(u, captions.length, samples)), R, R)));
  const skipped = units.length - todo.length;
  events.emit({
    type: 'stage',
    name: 'generating',
    detail: `${todo.length} images (${units.length} in shard ${shard.index}/${shard.count}${skipped ? `, ${skipped} already done` : ''}), ${N - r} tokens each, batch ${batch}`,
  });

  const perImage = N - r;
  const totalTokens = todo.length * perImage;
  let tokensDone = 0;
  let samplingMs = 0;
  let lastEmit = 0;
  const started = performance.now();
  const files: string[] = [];
  let stopped = false;
  for (let start = 0; start < todo.length; start += batch) {
    if (job.shouldStop?.()) {
      stopped = true;
      events.emit({ type: 'log', level: 'warn', message: `stopped after ${start} of ${todo.length} images; run the same command again to finish` });
      break;
    }
    const group: Unit[] = todo.slice(start, start + batch);
    const B = group.length;
    const text = new Int32Array(B * Tt);
    group.forEach((u, b) => text.set(texts[u.caption], b * Tt));
    const batchPrefix = new Int32Array(B * r);
    for (let b = 0; b < B; b++) batchPrefix.set(prefix, b * r);
    const t0 = performance.now();
    const sampled = await sampleImageTokensAsync(
      prior,
      { text, prefix: batchPrefix, rngs: group.map((u) => unitRng(seed, u)) },
      {
        sampling: job.sampling,
        condScale: job.condScale,
        onToken: (k) => {
          const now = performance.now();
          if (now - lastEmit < 250 && k < perImage) return;
          lastEmit = now;
          const doneNow = tokensDone + k * B;
          const rate = doneNow / ((samplingMs + now - t0) / 1000);
          events.emit({
            type: 'progress',
            task: 'generate',
            step: doneNow,
            total: totalTokens,
            unit: 'token',
            metrics: { tokens_per_s: rate, eta_s: (totalTokens - doneNow) / rate },
          });
        },
      },
    );
    samplingMs += performance.now() - t0;
    tokensDone += B * perImage;

    // (B, 3, R, R) images in [0, 1] -> PNGs, then their records (PNG first: a record always names a complete file).
    const images = job.decodeBatch
      ? await job.decodeBatch(sampled.tokens, B)
      : (noGrad(() => tidy(() => dvae.model.decode(Tensor.from(sampled.tokens, [B, gridSide, gridSide], 'i32', dvae.model.device)).toArray())) as Float32Array); // tokens in, pixels out
    for (let b = 0; b < B; b++) {
      const u = group[b];
      const name = unitFileName(u, captions.length, samples);
      await writePng(path.join(out, name), planesToRgb(images, [B, 3, R, R], b));
      const record: ResultRecord = {
        caption_index: u.caption,
        caption: captions[u.caption],
        sample: u.sample,
        seed,
        file: name,
        log_likelihood: sampled.logLikelihood[b],
        tokens: perImage,
        grid: Array.from(sampled.tokens.subarray(b * N, (b + 1) * N)),
      };
      appendResult(out, record);
      files.push(path.join(out, name));
    }
  }
  if (todo.length > 0) events.emit({ type: 'done', task: 'generate' });
  const generated = files.length;
  const seconds = (performance.now() - started) / 1000;
  const records = readResults(out).filter((rec) => rec.caption_index < captions.length);
  const gallery = writeGallery(out, records, {
    title: `dalle generate: ${captions.length} captions x ${samples} samples`,
    settings: `seed ${seed}, temperature ${job.sampling.temperature}, top-k ${job.sampling.topK || 'off'}, top-p ${job.sampling.topP === 1 ? 'off' : job.sampling.topP}, cond-scale ${job.condScale}${job.prompt ? `, image prompt ${job.prompt.source} (top ${job.prompt.keepRows} rows)` : ''}`,
  });
  events.emit({ type: 'artifact', kind: 'results', path: path.join(out, RESULTS_FILE) });
  events.emit({ type: 'artifact', kind: 'report', path: gallery });
  return {
    out,
    shard: { index: shard.index, count: shard.count, source: shard.source },
    units: units.length,
    generated,
    skipped,
    tokensPerSecond: samplingMs > 0 ? tokensDone / (samplingMs / 1000) : 0,
    seconds,
    results: path.join(out, RESULTS_FILE),
    gallery,
    truncated,
    files,
    stopped,
  };
}
