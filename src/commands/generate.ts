import * as fs from 'node:fs';
import * as path from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { STOP_SIGNALS, signalExitCode } from '../cli/stop-signals';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { modelPathOrBundled } from '../cli/default-models';
import { priorConfig } from '../core/config';
import { IMAGE_EXTENSIONS, isImagePath } from '../core/data/sources/files';
import { CoreEmitter } from '../core/events';
import { shardLockFile } from '../core/io/run-lock';
import { TextFileError } from '../core/io/errors';
import { readTextFileSync, TEXT_LIMITS } from '../core/io/text-file';
import type { GenerateSummary } from '../core/sample/generate';
import type { RerankSummary } from '../core/sample/rerank';

export type GenerateCommandResult = GenerateSummary & {
  readonly prior: string;
  readonly dvae: string;
  /** --rerank: the reranking of the folder; null without it, or while a sharded job still lacks images. */
  readonly rerank: RerankSummary | null;
  readonly runtime: 'engine' | 'onnx';
  /** With --runtime onnx: where the graphs were read from, and whether they were given, cached or exported now. */
  readonly onnx?: { readonly prior: string; readonly dvae: string; readonly source: 'given' | 'cached' | 'exported' };
};

export default class GenerateCommand extends BaseCommand<typeof GenerateCommand> {
  static override summary = 'Generate images from captions with a trained prior and dVAE: PNGs, results.jsonl and an index.html gallery.';

  static override description =
    'Each caption gets --samples images, DIR/c00012-s003.png for caption 12, sample 3 (never named by the caption). ' +
    'An image depends only on (--seed, caption index, sample index): not on --batch, nor on --shard, so sharded and ' +
    'single runs give the same files. A rerun into the same DIR skips images already written and fails if the ' +
    'settings differ. --shard K/N (K from 0) runs every N-th image; --shard auto reads SLURM_ARRAY_TASK_ID with ' +
    'SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MIN/MAX/STEP), or Kubernetes JOB_COMPLETION_INDEX with ' +
    'DALLE_SHARD_COUNT. Captions longer than the prior\'s text_len tokens are cut (with a warning). Without --prior ' +
    'and --dvae, the bundled models in <package>/models/default/{prior,dvae} are used. Ctrl-C finishes the batch being ' +
    'sampled, writes the gallery and exits with code 130; the same command then finishes the job. --runtime onnx runs the ' +
    'prior and the dVAE decoder through onnxruntime-node, with the same sampling (same tokens as the engine for the same ' +
    'seed, up to float rounding): on the graphs in --onnx DIR (`dalle export --prior RUN --dvae RUN --out DIR`), or ' +
    'else on an export cache in $DALLE_ONNX_CACHE or <tmpdir>/dalle-onnx-cache-<uid>, written once per model (named by ' +
    'the hash of its weights, renamed into place when complete) and reused. Either way the graphs are first checked ' +
    'against the engine on a test caption and grid. --rerank K --clip RUN then ranks each caption\'s --samples ' +
    'candidates by CLIP score and keeps the best K, as `dalle rerank` does (the paper: 512 samples, the best kept); a ' +
    'rerun reuses both the images and the scores; in a sharded job the shard that finds every image present reranks.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> "red apple, noto style" "a cat face, twemoji style" --prior runs/prior-emoji --dvae runs/dvae-emoji --out out/apple --samples 8',
    '<%= config.bin %> <%= command.id %> --captions captions.txt --prior runs/prior-emoji --dvae runs/dvae-emoji --out out/all --top-k 64 --cond-scale 3 --shard auto',
    'echo "grinning face, fluent style" | <%= config.bin %> <%= command.id %> --captions - --out out/face --image face.png --keep-rows 6',
    '<%= config.bin %> <%= command.id %> "red apple, noto style" --out out/onnx --runtime onnx --threads 2',
    '<%= config.bin %> <%= command.id %> --captions captions.txt --out out/best --samples 32 --rerank 1 --clip runs/clip-emoji',
  ];

  static override strict = false;

  static override flags = {
    captions: Flags.string({ summary: 'A UTF-8 text file with one caption a line (blank lines skipped), or - for stdin.', helpValue: 'FILE|-' }),
    prior: Flags.string({ summary: 'A prior run directory (its latest checkpoint) or a checkpoint directory; default: the bundled model.', helpValue: 'RUN' }),
    dvae: Flags.string({ summary: 'The dVAE run the prior was trained on, or a checkpoint directory; default: the bundled model.', helpValue: 'RUN' }),
    out: Flags.string({ char: 'o', summary: 'Folder for the PNGs, results.jsonl and index.html: new, empty, or an earlier generate\'s (created if missing).', required: true, helpValue: 'DIR' }),
    samples: Flags.integer({ char: 'n', summary: 'Images per caption.', default: 4, min: 1 }),
    batch: Flags.integer({ char: 'b', summary: 'Images sampled at a time (memory and speed only; the images do not change).', default: 8, min: 1 }),
    temperature: Flags.string({ summary: 'Divides the logits; > 0 (below 1: safer, less varied).', default: '1', helpValue: 'T' }),
    'top-k': Flags.integer({ summary: 'Sample from the k most likely tokens only; 0 = off.', default: 0, min: 0 }),
    'top-p': Flags.string({ summary: 'Sample from the most likely tokens up to this much probability, in (0, 1]; 1 = off.', default: '1', helpValue: 'P' }),
    'cond-scale': Flags.string({ summary: 'Classifier-free guidance: logits = uncond + s (cond - uncond); 1 = off.', default: '1', helpValue: 'S' }),
    shard: Flags.string({ summary: 'Run part of the job: K/N (K from 0), or auto (Slurm array / Kubernetes Indexed Job environment).', helpValue: 'K/N|auto' }),
    image: Flags.string({ summary: 'An image prompt (one image file): its top --keep-rows rows of tokens are kept and the prior completes the rest.', helpValue: 'FILE' }),
    'keep-rows': Flags.integer({ summary: "With --image: token rows kept from the top, 1 to the dVAE grid's side - 1 (default: half the grid)." }),
    rerank: Flags.integer({ summary: 'Rank each caption\'s samples by CLIP score (--clip) and keep the best K (see `dalle rerank`).', min: 1, helpValue: 'K' }),
    clip: Flags.string({ summary: 'With --rerank: a CLIP run directory (`dalle train-clip`) or a checkpoint directory.', helpValue: 'RUN' }),
    runtime: Flags.option({
      options: ['engine', 'onnx'] as const,
      default: 'engine' as const,
      summary: "Run the prior and dVAE on dalle's engine, or through onnxruntime-node (graphs from --onnx DIR, else exported once into a cache).",
    })(),
    onnx: Flags.string({
      summary: 'With --runtime onnx: the folder `dalle export --prior RUN --dvae RUN --out DIR` wrote; default: a cache in $DALLE_ONNX_CACHE or <tmpdir>/dalle-onnx-cache-<uid>.',
      helpValue: 'DIR',
    }),
  };

  static override configUse: ConfigUse = {
    keys: [...ENGINE_KEYS, 'runtime.seed'],
    note: "the models' settings come from the --prior and --dvae runs; sampling has its own flags",
  };

  async run(): Promise<GenerateCommandResult> {
    const argvCaptions = (await this.parse(GenerateCommand, this.argv)).argv as string[];
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../core/runtime');
    const { encodeImages } = await import('../core/image/dvae-codec');
    const { loadDvae } = await import('../core/models/dvae/load');
    const { CaptionError, checkKeepRows, runGeneration } = await import('../core/sample/generate');
    const { loadPrior } = await import('../core/models/prior/load');
    const { parseShard } = await import('../core/sample/plan');
    const { SamplingError, checkSamplingOptions } = await import('../core/sample/filters');
    const runtime = this.loadConfig(priorConfig).runtime;

    // Flags first (cheap errors before any model is loaded).
    const number = (flag: string, text: string): number => {
      const v = Number(text);
      if (text.trim() === '' || !Number.isFinite(v)) throw new SamplingError(`--${flag} must be a number, got ${JSON.stringify(text)}`, `e.g. --${flag} 1`);
      return v;
    };
    const sampling = { temperature: number('temperature', this.flags.temperature), topK: this.flags['top-k'], topP: number('top-p', this.flags['top-p']) };
    checkSamplingOptions(sampling);
    const condScale = number('cond-scale', this.flags['cond-scale']);
    const shard = parseShard(this.flags.shard);
    if (this.flags['keep-rows'] !== undefined && this.flags.image === undefined) this.error('--keep-rows needs --image FILE (the image whose top rows are kept)', { exit: 2 });
    if (this.flags.image !== undefined) checkImagePromptFile(this.flags.image, (message, exit) => this.error(message, { exit }));
    if (this.flags.onnx !== undefined && this.flags.runtime !== 'onnx') this.error('--onnx DIR needs --runtime onnx', { exit: 2 });
    checkRerankFlags(this.flags, (message) => this.error(message, { exit: 2 }));
    const captions = [...argvCaptions, ...(this.flags.captions !== undefined ? readCaptions(this.flags.captions, CaptionError) : [])];
    if (captions.length === 0) {
      throw new CaptionError('no captions given', 'give captions as arguments (dalle generate "red apple, noto style" ...) or --captions FILE (one a line; - reads stdin)');
    }

    const priorPath = await modelPathOrBundled(this.config.root, 'prior', this.flags.prior);
    const dvaePath = await modelPathOrBundled(this.config.root, 'dvae', this.flags.dvae);
    // --out is new, empty or one of ours (a rerun or another shard), and writable: checked before any model is loaded.
    const { claimOutputFolder } = await import('../core/io/output-folder');
    const { GENERATE_OUTPUT_RULE } = await import('../core/sample/output');
    claimOutputFolder(this.flags.out, GENERATE_OUTPUT_RULE);

    const { device } = applyRuntime(runtime, 'generate');
    const events = this.renderEvents(new CoreEmitter());
    // One process per output folder; a sharded job's shards share theirs on purpose, so each shard has its own lock.
    this.lockFolder(this.flags.out, events, shard.count > 1 ? shardLockFile(shard.index, shard.count) : undefined);
    // The CLIP is opened first, so a bad --clip fails before any image is sampled.
    const { openClipScorer } = await import('../core/models/clip/scorer');
    const scorer = this.flags.clip !== undefined ? await openClipScorer(this.flags.clip, device) : undefined;
    const prior = loadPrior(priorPath, device);
    try {
      const dvae = loadDvae(dvaePath, device);
      // The range of --keep-rows is known once the dVAE's grid is: checked before anything is exported or encoded.
      const keepRows = this.flags['keep-rows'] ?? Math.max(1, Math.floor(dvae.gridSide / 2));
      if (this.flags.image !== undefined) checkKeepRows(keepRows, dvae.gridSide);
      // --runtime onnx: the same prior and dVAE as onnxruntime sessions (onnxruntime-node is loaded only then).
      let onnx: import('../core/onnx').OnnxGenerationModels | undefined;
      try {
        if (this.flags.runtime === 'onnx') {
          const { openOnnxGeneration } = await import('../core/onnx');
          onnx = await openOnnxGeneration(prior, dvae, { dir: this.flags.onnx, threads: runtime.threads, priorArg: priorPath, dvaeArg: dvaePath, events });
          events.emit({
            type: 'log',
            level: 'info',
            message: `onnxruntime: ${onnx.source === 'given' ? 'the export' : onnx.source === 'cached' ? 'the cached export' : 'exported now'} in ${onnx.dirs.prior === onnx.dirs.dvae ? onnx.dirs.prior : `${onnx.dirs.prior} and ${onnx.dirs.dvae}`} (matches the engine within ${onnx.check.logitsMaxAbsDiff.toExponential(1)} logits, ${onnx.check.pixelsMaxAbsDiff.toExponential(1)} pixels)`,
          });
        }
        let prompt;
        if (this.flags.image !== undefined) {
          const encoded = await encodeImages(dvae, [this.flags.image], { events, encodeBatch: onnx?.encodeBatch });
          const side = dvae.gridSide;
          prompt = { grid: encoded.tokens.subarray(0, side * side), keepRows, source: this.flags.image };
        }
        // SIGINT (Ctrl-C) or SIGTERM (Slurm, Kubernetes): finish the batch being sampled, write the gallery, exit 128 + the
        // signal's number (130, 143); a second signal leaves at once. Every finished image is already on disk.
        let stoppedBy: NodeJS.Signals | undefined;
        // One listener per signal, each knowing its signal (process.emit passes no name; a real signal does).
        const listeners = STOP_SIGNALS.map((signal) => [signal, (): void => {
          if (stoppedBy) process.exit(signalExitCode(signal));
          stoppedBy = signal;
          events.emit({ type: 'log', level: 'warn', message: `${signal}: finishing this batch (a second signal leaves now); the same command finishes the job later` });
        }] as const);
        for (const [signal, listener] of listeners) process.on(signal, listener);
        const summary = await runGeneration({
          prior: onnx?.prior ?? prior.model,
          decodeBatch: onnx?.decodeBatch,
          runtime: onnx ? 'onnx' : 'engine',
          encodeText: (caption) => prior.tokenizer.encode(caption),
          dvae,
          captions,
          samples: this.flags.samples,
          batch: this.flags.batch,
          sampling,
          condScale,
          seed: runtime.seed,
          shard,
          prompt,
          out: this.flags.out,
          priorId: path.resolve(prior.checkpoint),
          dvaeId: path.resolve(dvae.checkpoint),
          events,
          shouldStop: () => stoppedBy !== undefined,
        }).finally(() => {
          for (const [signal, listener] of listeners) process.off(signal, listener);
        });
        if (summary.stopped) process.exitCode = signalExitCode(stoppedBy ?? 'SIGINT');
        this.log(
          `${summary.generated} images generated${summary.stopped ? ` (stopped by ${stoppedBy ?? 'a signal'}: run the same command again to finish)` : ''}${summary.skipped ? `, ${summary.skipped} already there` : ''} in ${summary.out}` +
            ` (${summary.tokensPerSecond.toFixed(1)} image tokens/s); gallery ${summary.gallery}`,
        );
        if (summary.truncated.length > 0) this.warn(`${summary.truncated.length} caption(s) were cut to ${prior.model.textLen} tokens: ${summary.truncated.join(', ')}`);
        const rerank = scorer && !summary.stopped ? await rerankAfterGeneration(scorer, summary.out, captions.length, this.flags, events, (line) => this.log(line)) : null;
        return {
          ...summary,
          prior: prior.checkpoint,
          dvae: dvae.checkpoint,
          rerank,
          runtime: this.flags.runtime,
          onnx: onnx && { prior: onnx.dirs.prior, dvae: onnx.dirs.dvae, source: onnx.source },
        };
      } finally {
        await onnx?.release();
        dvae.model.dispose();
      }
    } finally {
      prior.model.dispose();
      await scorer?.dispose();
    }
  }
}

/**
 * --image is one image file. A folder or a manifest would be expanded into many images and the prompt silently made
 * of the first, so they are refused (exit 2); a missing file is an input error (exit 4).
 */
function checkImagePromptFile(file: string, fail: (message: string, exit: number) => never): void {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (stat === undefined) fail(`--image ${file}: no such file`, 4);
  const what = stat.isDirectory() ? 'a folder' : !isImagePath(file) ? 'not an image file (by its extension)' : undefined;
  if (what !== undefined) {
    fail(`--image takes one image file (${[...IMAGE_EXTENSIONS].join(', ')}), but ${file} is ${what}; to prompt with several images, run generate once per image`, 2);
  }
}

/** --rerank K and --clip RUN go together, and K cannot exceed --samples. */
function checkRerankFlags(flags: { rerank?: number; clip?: string; samples: number }, fail: (message: string) => never): void {
  if (flags.rerank !== undefined && flags.clip === undefined) fail('--rerank needs --clip RUN (the CLIP that scores the samples)');
  if (flags.clip !== undefined && flags.rerank === undefined) fail('--clip is used with --rerank K (the samples kept per caption)');
  if (flags.rerank !== undefined && flags.rerank > flags.samples) fail(`--rerank ${flags.rerank} keeps more than the --samples ${flags.samples} made per caption`);
}

/**
 * --rerank: ranks the folder once every (caption, sample) image is there; a shard that finds others missing leaves it
 * to the shard that completes the folder (each rerank rewrites results.jsonl whole, so none may run beside a writer).
 */
async function rerankAfterGeneration(
  scorer: import('../core/models/clip/scorer').ClipScorer,
  out: string,
  captions: number,
  flags: { rerank?: number; clip?: string; samples: number },
  events: import('../core/events').EventSink,
  log: (line: string) => void,
): Promise<RerankSummary | null> {
  const { readResults } = await import('../core/sample/output');
  const { rerankGeneration } = await import('../core/sample/rerank');
  const wanted = captions * flags.samples;
  const present = readResults(out).filter((r) => r.caption_index < captions && r.sample < flags.samples).length;
  if (present < wanted) {
    log(`not reranked yet: ${present} of ${wanted} images are there; the shard that completes the folder reranks it (or run \`dalle rerank --clip ${flags.clip} --keep ${flags.rerank} ${out}\` then)`);
    return null;
  }
  const r = await rerankGeneration(scorer, out, { keep: flags.rerank!, events });
  log(`reranked ${r.candidates} images (${r.scored} scored now): mean CLIP score ${r.meanClipScore.toFixed(2)} of all, ${r.meanKeptClipScore.toFixed(2)} of the best ${r.keep} per caption (in ${r.best}); gallery ${r.gallery}`);
  return r;
}

/** Captions of a file (or stdin for '-'): one a line, \n or \r\n, blank lines skipped; none is an error. */
export function readCaptions(file: string, CaptionError: new (message: string, hint?: string) => Error): string[] {
  let text: string;
  try {
    text = readTextFileSync(file, TEXT_LIMITS.captionList);
  } catch (error) {
    if (error instanceof TextFileError) throw error;
    throw new CaptionError(`cannot read captions from ${file === '-' ? 'stdin' : file}: ${error instanceof Error ? error.message : String(error)}`, 'give a UTF-8 text file with one caption a line, or - to read them from stdin');
  }
  const captions = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
  if (captions.length === 0) {
    throw new CaptionError(`${file === '-' ? 'stdin' : file} has no captions (it is empty or blank)`, 'write one caption a line, e.g. "red apple, noto style"');
  }
  return captions;
}
