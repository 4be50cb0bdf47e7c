import * as path from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { modelPathOrBundled } from '../../cli/default-models';
import { priorConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';
import type { TextToImageReport } from '../../core/eval/text-to-image/evaluate';

/** Flags that only make sense when this command generates the samples (with --captions). */
const GENERATION_FLAGS = ['prior', 'dvae', 'per-caption', 'batch', 'temperature', 'top-k', 'top-p', 'cond-scale'] as const;

export default class EvaluateTextToImageCommand extends BaseCommand<typeof EvaluateTextToImageCommand> {
  static override summary = 'The text-to-image figures of a model on captions: CLIP R-precision, mean CLIP score and the FID blur curve, in one report.';

  static override description =
    'Measures generated samples with their captions: either a `dalle generate` folder (--samples DIR, its ' +
    'results.jsonl names each image\'s caption), or captions to generate from first (--captions FILE, with --prior / ' +
    '--dvae or the bundled models), written into REPORT-samples/ beside the report (a rerun reuses the images there). ' +
    'Under the CLIP of --clip (a `dalle train-clip` run trained on the training split only, or an ONNX CLIP folder): ' +
    'CLIP R-precision, the fraction of images whose own caption ranks first among --pool captions (its own and ' +
    'pool - 1 others drawn with --seed, without replacement, from the other distinct captions; with fewer distinct ' +
    'captions the pool is all of them, and the report says so), top-5, and the mean CLIP score 100 * max(cos, 0) with ' +
    'its standard error. Then the FID between the samples and --real at each --blur radius (both blurred alike, as in ' +
    'the DALL-E paper\'s Figure 9), with the CLIP\'s image tower as features (or --model FILE.onnx, e.g. Inception); ' +
    'with --reference DIR (other real images, e.g. as many training images as samples) the same curve of real ' +
    'against real, and the ratio. Writes REPORT.json (every figure, every sample\'s score and rank) and REPORT.html ' +
    '(a table and the chart).';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --samples out/val200 --clip runs/clip-train --real data/emoji/val --out reports/val200',
    '<%= config.bin %> <%= command.id %> --captions val200.txt --cond-scale 3 --clip runs/clip-train --real data/emoji/val --reference out/train200 --out reports/bundled',
    '<%= config.bin %> <%= command.id %> --samples out/best --kept --clip runs/clip-train --real data/emoji/val --blur 0 --pool 50 --seed 1 --out reports/best --json',
  ];

  static override flags = {
    samples: Flags.string({ summary: 'A `dalle generate` folder to measure (results.jsonl gives each image\'s caption).', helpValue: 'DIR', exclusive: ['captions'] }),
    captions: Flags.string({ summary: 'Generate the samples first from these captions (one a line) into REPORT-samples/.', helpValue: 'FILE' }),
    prior: Flags.string({ summary: 'With --captions: the prior run; default: the bundled model.', helpValue: 'RUN' }),
    dvae: Flags.string({ summary: 'With --captions: the dVAE run the prior was trained on; default: the bundled model.', helpValue: 'RUN' }),
    'per-caption': Flags.integer({ summary: 'With --captions: images per caption (default 1).', min: 1, helpValue: 'N' }),
    batch: Flags.integer({ summary: 'With --captions: images sampled at a time (default 8; speed and memory only).', min: 1, helpValue: 'N' }),
    temperature: Flags.string({ summary: 'With --captions: sampling temperature (default 1).', helpValue: 'T' }),
    'top-k': Flags.integer({ summary: 'With --captions: sample from the k most likely tokens (default 0 = off).', min: 0, helpValue: 'K' }),
    'top-p': Flags.string({ summary: 'With --captions: nucleus sampling mass (default 1 = off).', helpValue: 'P' }),
    'cond-scale': Flags.string({ summary: 'With --captions: classifier-free guidance scale (default 1 = off).', helpValue: 'S' }),
    kept: Flags.boolean({ summary: 'Measure only the images `dalle rerank` kept in the --samples folder.', default: false }),
    clip: Flags.string({ summary: 'The CLIP: a `dalle train-clip` run (its best checkpoint, else its latest), a checkpoint, or an ONNX CLIP folder.', required: true, helpValue: 'RUN' }),
    real: Flags.string({ summary: 'Real images the FID compares the samples with: a folder, manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    reference: Flags.string({ summary: 'Other real images measured against --real the same way: the real-vs-real curve and the ratio.', helpValue: 'PATH' }),
    pool: Flags.integer({ summary: 'Captions each image ranks (its own and pool - 1 others); chance is 1 / pool.', default: 100, min: 2 }),
    blur: Flags.string({ summary: 'Blur radii of the FID curve (sigma = radius; 0 = none).', default: '0,1,2,4,8', helpValue: 'R,R,...' }),
    model: Flags.string({ summary: 'Take the FID features from this ONNX image model (e.g. Inception v3) instead of the CLIP\'s image tower.', helpValue: 'FILE.onnx' }),
    'input-size': Flags.integer({ summary: 'With --model: the side of its input images (read from the model when fixed).', min: 1, helpValue: 'PX' }),
    'features-output': Flags.string({ summary: 'With --model: the output holding the feature vectors (default: its first).', helpValue: 'NAME' }),
    normalize: Flags.option({ options: ['unit', 'symmetric', 'imagenet'] as const, summary: 'With --model: the pixels it expects (symmetric = [-1, 1], pytorch-fid Inception).', default: 'unit' as const })(),
    'batch-size': Flags.integer({ summary: 'Images per feature model call.', default: 32, min: 1 }),
    out: Flags.string({ char: 'o', summary: 'The report: REPORT.json and REPORT.html (with --captions, the samples go to REPORT-samples/).', required: true, helpValue: 'REPORT' }),
  };

  static override configUse: ConfigUse = {
    keys: [...ENGINE_KEYS, 'runtime.seed'],
    note: "the models' settings come from their runs; --seed draws the distractors (and, with --captions, the samples)",
  };

  async run(): Promise<TextToImageReport & { files: { json: string; html: string } }> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../../core/runtime');
    const { parseBlurRadii } = await import('../../core/eval/blur');
    const { DataError } = await import('../../core/data/errors');
    const { evaluateTextToImage, preflightTextToImage } = await import('../../core/eval/text-to-image/evaluate');
    const { readCaptionFile } = await import('../../core/eval/text-to-image/samples');
    const { samplesFolderFor, writeTextToImageReport } = await import('../../core/eval/text-to-image/html');
    const { flags } = this;
    const runtime = this.loadConfig(priorConfig).runtime;

    // Flags first: cheap errors before any model is loaded or anything is written.
    if ((flags.samples === undefined) === (flags.captions === undefined)) {
      this.error('give the samples to measure: --samples DIR (a `dalle generate` folder), or --captions FILE to generate them first', { exit: 2 });
    }
    if (flags.samples !== undefined) {
      const stray = GENERATION_FLAGS.filter((f) => flags[f] !== undefined);
      if (stray.length > 0) this.error(`${stray.map((f) => `--${f}`).join(', ')} ${stray.length === 1 ? 'is' : 'are'} for generating (with --captions FILE); --samples DIR is measured as it is`, { exit: 2 });
    }
    if (flags.captions !== undefined && flags.kept) this.error('--kept takes the images a rerank kept in a --samples folder; a folder generated from --captions is not reranked', { exit: 2 });
    for (const f of ['input-size', 'features-output'] as const) if (flags[f] !== undefined && flags.model === undefined) this.error(`--${f} is for --model FILE.onnx`, { exit: 2 });
    let radii: number[];
    try {
      radii = parseBlurRadii(flags.blur);
    } catch (error) {
      throw new DataError((error as Error).message.replace(/^dalle: /, ''), 'give radii >= 0.3 (or 0 for none) separated by commas, e.g. --blur 0,1,2,4,8');
    }
    const generating = flags.captions !== undefined;
    const samples = generating ? samplesFolderFor(flags.out) : flags.samples!;
    const sampling = generating ? await this.samplingOptions() : undefined;
    const captions = generating ? readCaptionFile(flags.captions!) : undefined;
    preflightTextToImage({ samples, generating, keptOnly: flags.kept, real: flags.real, reference: flags.reference, pool: flags.pool, radii, out: flags.out });
    const priorPath = generating ? await modelPathOrBundled(this.config.root, 'prior', flags.prior) : undefined;
    const dvaePath = generating ? await modelPathOrBundled(this.config.root, 'dvae', flags.dvae) : undefined;

    const { device } = applyRuntime(runtime, 'evaluate');
    const events = this.renderEvents(new CoreEmitter());
    if (generating) this.lockFolder(samples, events);
    const { openClipScorer } = await import('../../core/models/clip/scorer');
    const scorer = await openClipScorer(flags.clip, device);
    const cleanups: (() => Promise<void> | void)[] = [() => scorer.dispose()];
    try {
      let extractor: import('../../core/eval/features').FeatureExtractor | undefined;
      if (flags.model !== undefined) {
        const { OnnxFeatureModel } = await import('../../core/eval/features');
        const opened = await OnnxFeatureModel.open(flags.model, { inputSize: flags['input-size'], featureOutput: flags['features-output'], normalize: flags.normalize, threads: runtime.threads });
        cleanups.push(() => opened.dispose());
        extractor = opened;
      }
      let generate: import('../../core/eval/text-to-image/evaluate').TextToImageOptions['generate'];
      if (generating) {
        const { loadPrior } = await import('../../core/models/prior/load');
        const { loadDvae } = await import('../../core/models/dvae/load');
        const prior = loadPrior(priorPath!, device);
        cleanups.push(() => prior.model.dispose());
        const dvae = loadDvae(dvaePath!, device);
        cleanups.push(() => dvae.model.dispose());
        generate = {
          prior: prior.model,
          encodeText: (caption) => prior.tokenizer.encode(caption),
          dvae,
          captions: captions!,
          samples: flags['per-caption'] ?? 1,
          batch: flags.batch ?? 8,
          sampling: sampling!.sampling,
          condScale: sampling!.condScale,
          seed: runtime.seed,
          priorId: path.resolve(prior.checkpoint),
          dvaeId: path.resolve(dvae.checkpoint),
        };
      }
      const report = await evaluateTextToImage({
        samples,
        generate,
        keptOnly: flags.kept,
        scorer,
        extractor,
        real: flags.real,
        reference: flags.reference,
        pool: flags.pool,
        radii,
        seed: runtime.seed,
        batchSize: flags['batch-size'],
        events,
      });
      const files = writeTextToImageReport(flags.out, report);
      events.emit({ type: 'artifact', kind: 'report', path: files.json });
      events.emit({ type: 'artifact', kind: 'report', path: files.html });
      this.printSummary(report, files);
      return { ...report, files };
    } finally {
      for (const cleanup of cleanups.reverse()) await cleanup();
    }
  }

  /** The sampling flags of generation, checked (the same rules as `dalle generate`'s). */
  private async samplingOptions(): Promise<{ sampling: { temperature: number; topK: number; topP: number }; condScale: number }> {
    const { SamplingError, checkSamplingOptions } = await import('../../core/sample/filters');
    const number = (flag: string, text: string | undefined, fallback: number): number => {
      if (text === undefined) return fallback;
      const v = Number(text);
      if (text.trim() === '' || !Number.isFinite(v)) throw new SamplingError(`--${flag} must be a number, got ${JSON.stringify(text)}`, `e.g. --${flag} 1`);
      return v;
    };
    const sampling = { temperature: number('temperature', this.flags.temperature, 1), topK: this.flags['top-k'] ?? 0, topP: number('top-p', this.flags['top-p'], 1) };
    checkSamplingOptions(sampling);
    return { sampling, condScale: number('cond-scale', this.flags['cond-scale'], 1) };
  }

  private printSummary(report: TextToImageReport, files: { json: string; html: string }): void {
    const r = report.rPrecision;
    const c = report.clipScore;
    const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
    const pool = r.pool < r.poolRequested ? `${r.pool} (all distinct captions; ${r.poolRequested} asked)` : String(r.pool);
    this.log(`${report.samples.images} images of ${report.samples.captions} captions in ${report.samples.path}, CLIP ${report.clip.name}`);
    this.log(
      `CLIP R-precision ${pct(r.top1)} +- ${pct(r.top1StdErr)} in pools of ${pool} (chance ${pct(r.chance)})` +
        (r.top5 !== null ? `, top-5 ${pct(r.top5)}` : '') +
        `; CLIP score ${c.mean.toFixed(2)}${c.stdErr !== null ? ` +- ${c.stdErr.toFixed(2)}` : ''}`,
    );
    for (const p of report.fid.points) {
      this.log(`FID ${p.fid.toPrecision(4)} at blur radius ${p.radius}` + (p.reference !== null ? ` (reference ${p.reference.toPrecision(4)}, ratio ${p.ratio!.toFixed(2)})` : ''));
    }
    this.log(`report ${files.json}, ${files.html}`);
  }
}
