import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { RuntimeConfig, dvaeConfig } from '../../core/config';
import { CoreEmitter, EventSink } from '../../core/events';
import type { FeatureExtractor } from '../../core/eval/features';
import type { ImageMetric, MetricReport } from '../../core/eval/report';

/** Flags every feature metric shares (fid, kid, is); the other two commands import them from here. */
export const featureFlags = {
  model: Flags.string({
    summary: 'An image model in ONNX format (e.g. Inception v3) to take features from, instead of a dalle CLIP.',
    helpValue: 'FILE.onnx',
    exclusive: ['clip'],
  }),
  clip: Flags.string({
    summary: 'Take the features from the image tower of this dalle CLIP run (`dalle train-clip`): the default extractor.',
    helpValue: 'RUN',
  }),
  'input-size': Flags.integer({ summary: 'Side of the model\'s input images (read from the model when it is fixed).', min: 1, helpValue: 'PX' }),
  'features-output': Flags.string({ summary: 'The model output holding the feature vectors (default: its first output).', helpValue: 'NAME' }),
  normalize: Flags.option({
    options: ['unit', 'symmetric', 'imagenet'] as const,
    summary: 'Pixels the model expects: unit = [0, 1], symmetric = [-1, 1] (pytorch-fid Inception), imagenet = mean/std.',
    default: 'unit' as const,
  })(),
  blur: Flags.string({
    summary: 'Gaussian blur radii applied to all images first, one measurement each (sigma = radius), e.g. 0,1,2,4,8.',
    default: '0',
    helpValue: 'R,R,...',
  }),
  out: Flags.string({ summary: 'Write the report to OUT.json and OUT.html (a chart of the values against the blur radius).', helpValue: 'OUT' }),
  'batch-size': Flags.integer({ summary: 'Images per model call.', default: 32, min: 1 }),
  limit: Flags.integer({ summary: 'Use only the first N images of each set (0 = all).', default: 0, min: 0 }),
};

export interface FeatureFlagValues {
  model?: string;
  clip?: string;
  'input-size'?: number;
  'features-output'?: string;
  'logits-output'?: string;
  probabilities?: boolean;
  normalize: 'unit' | 'symmetric' | 'imagenet';
  blur: string;
  out?: string;
  'batch-size': number;
  limit: number;
}

/** Opens the feature extractor the flags name. */
export async function openExtractor(flags: FeatureFlagValues, runtime: RuntimeConfig): Promise<FeatureExtractor> {
  const { DataError } = await import('../../core/data/errors');
  if (flags.model === undefined) {
    if (flags.clip === undefined) {
      throw new DataError(
        'no feature model: give dalle\'s own CLIP (--clip RUN, a `dalle train-clip` run) or an image model in ONNX format (--model FILE.onnx)',
        'train one with `dalle train-clip --data DIR --out RUN` and pass --clip RUN, or pass --model FILE.onnx (e.g. Inception v3 exported to ONNX, with --input-size 299 --normalize symmetric)',
      );
    }
    const { applyRuntime } = await import('../../core/runtime');
    const { loadClip } = await import('../../core/models/clip/load');
    const { ClipImageFeatures } = await import('../../core/models/clip/evaluate');
    const { device } = applyRuntime(runtime, 'evaluate');
    return new ClipImageFeatures(loadClip(flags.clip, device));
  }
  const { OnnxFeatureModel } = await import('../../core/eval/features');
  return OnnxFeatureModel.open(flags.model, {
    inputSize: flags['input-size'],
    featureOutput: flags['features-output'],
    logitsOutput: flags['logits-output'],
    outputsProbabilities: flags.probabilities,
    normalize: flags.normalize,
    threads: runtime.threads,
  });
}

/** Runs one metric for a command: blur radii, extractor, report files; prints one line per radius. */
export async function runMetricCommand(
  command: { log(line: string): void },
  metric: ImageMetric,
  flags: FeatureFlagValues & { real?: string; fake: string; subsets?: number; 'subset-size'?: number; splits?: number },
  runtime: RuntimeConfig,
  events: EventSink,
): Promise<MetricReport & { files?: { json: string; html: string } }> {
  const { parseBlurRadii } = await import('../../core/eval/blur');
  const { preflightReport, runImageMetric, writeMetricReport } = await import('../../core/eval/report');
  const { DataError } = await import('../../core/data/errors');
  let radii: number[];
  try {
    radii = parseBlurRadii(flags.blur);
  } catch (error) {
    throw new DataError((error as Error).message.replace(/^dalle: /, ''), 'give radii >= 0.3 (or 0 for none) separated by commas, e.g. --blur 0,1,2,4,8');
  }
  if (flags.out !== undefined) preflightReport(flags.out); // a bad --out fails before the features are extracted
  const extractor = await openExtractor(flags, runtime);
  try {
    const report = await runImageMetric({
      metric,
      real: flags.real,
      fake: flags.fake,
      extractor,
      radii,
      batchSize: flags['batch-size'],
      limit: flags.limit,
      kidSubsets: flags.subsets,
      kidSubsetSize: flags['subset-size'],
      seed: runtime.seed,
      splits: flags.splits,
      events,
    });
    const name = metric.toUpperCase();
    const sets = report.real ? `${report.real.images} real / ${report.fake.images} fake images` : `${report.fake.images} images`;
    for (const p of report.points) {
      const std = p.std !== undefined ? ` +- ${p.std.toPrecision(4)}` : '';
      const blur = radii.length > 1 || p.radius !== 0 ? ` at blur radius ${p.radius}` : '';
      command.log(`${name} ${p.value.toPrecision(6)}${std}${blur} (${sets}, ${report.extractor.name} ${report.extractor.output}, ${report.extractor.dim}-d)`);
    }
    if (flags.out === undefined) return report;
    const files = writeMetricReport(flags.out, report);
    events.emit({ type: 'artifact', kind: 'report', path: files.json });
    events.emit({ type: 'artifact', kind: 'report', path: files.html });
    return { ...report, files };
  } finally {
    await extractor.dispose();
  }
}

export default class EvaluateFidCommand extends BaseCommand<typeof EvaluateFidCommand> {
  static override summary = 'Fréchet Inception Distance between two image sets, optionally as a curve over blur radii.';

  static override description =
    'Runs a feature model over every image of --real and --fake (resized so the short side is the model\'s input side, ' +
    'centre-cropped), fits a Gaussian to each set of features and reports the Fréchet distance between them, computed ' +
    'in float64. With --blur R,R,... both sets are first blurred with a Gaussian of each radius (sigma = radius, at the ' +
    'images\' own resolution), as in the DALL-E paper\'s Figure 9, and one FID is reported per radius. FID values are ' +
    'only comparable under the same feature model: the report names it.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --real data/coco/val --fake samples/ --model inception.onnx --input-size 299 --normalize symmetric',
    '<%= config.bin %> <%= command.id %> --real data/emoji/val --fake samples/ --model inception.onnx --blur 0,1,2,4,8 --out reports/fid',
  ];

  static override flags = {
    real: Flags.string({ summary: 'Reference images: a folder, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    fake: Flags.string({ summary: 'Images to measure (e.g. samples), in any form --real takes.', required: true, helpValue: 'PATH' }),
    ...featureFlags,
  };

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed'], note: "the feature model and its input are this command's flags" };

  async run(): Promise<MetricReport> {
    const runtime = this.loadConfig(dvaeConfig).runtime;
    const events = this.renderEvents(new CoreEmitter());
    return runMetricCommand(this, 'fid', this.flags, runtime, events);
  }
}
