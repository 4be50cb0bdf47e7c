import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';
import type { MetricReport } from '../../core/eval/report';
import { featureFlags, runMetricCommand } from './fid';

export default class EvaluateKidCommand extends BaseCommand<typeof EvaluateKidCommand> {
  static override summary = 'Kernel Inception Distance between two image sets (unbiased MMD^2, cubic kernel, over subsets).';

  static override description =
    'Runs a feature model over every image of --real and --fake and reports the unbiased squared maximum mean ' +
    'discrepancy between the two feature sets under the kernel k(x, y) = (x.y / D + 1)^3, averaged over --subsets ' +
    'random subsets of --subset-size images from each set (clamped to the smaller set; drawn with --seed), with its ' +
    'standard deviation over the subsets. Unlike FID it is unbiased, so it suits small sets. --blur works as in ' +
    '`dalle evaluate fid`.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --real data/emoji/val --fake samples/ --model inception.onnx --subsets 100 --subset-size 1000',
  ];

  static override flags = {
    real: Flags.string({ summary: 'Reference images: a folder, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    fake: Flags.string({ summary: 'Images to measure (e.g. samples), in any form --real takes.', required: true, helpValue: 'PATH' }),
    subsets: Flags.integer({ summary: 'Random subsets to average over.', default: 100, min: 1 }),
    'subset-size': Flags.integer({ summary: 'Images drawn from each set per subset (clamped to the smaller set).', default: 1000, min: 2 }),
    ...featureFlags,
  };

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed'], note: "the feature model and its input are this command's flags" };

  async run(): Promise<MetricReport> {
    const runtime = this.loadConfig(dvaeConfig).runtime;
    const events = this.renderEvents(new CoreEmitter());
    return runMetricCommand(this, 'kid', this.flags, runtime, events);
  }
}
