import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';
import type { MetricReport } from '../../core/eval/report';
import { featureFlags, runMetricCommand } from './fid';

export default class EvaluateIsCommand extends BaseCommand<typeof EvaluateIsCommand> {
  static override summary = 'Inception Score of an image set, from a classifier\'s class probabilities.';

  static override description =
    'Runs a classifier in ONNX format (--model, e.g. Inception v3) over every image of --images and reports ' +
    'exp(E KL(p(y|x) || p(y))) over --splits equal parts of the images: the mean and the standard deviation over the ' +
    'parts. The classifier output named by --logits-output holds logits (a softmax is applied) or, with ' +
    '--probabilities, probabilities. --blur works as in `dalle evaluate fid`.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --images samples/ --model inception.onnx --input-size 299 --logits-output logits',
  ];

  static override flags = {
    images: Flags.string({ summary: 'Images to score: a folder, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    splits: Flags.integer({ summary: 'Parts to split the images into (mean and std over them).', default: 10, min: 1 }),
    'logits-output': Flags.string({ summary: 'The model output holding the class logits (default: its first output).', helpValue: 'NAME' }),
    probabilities: Flags.boolean({ summary: 'The --logits-output output is already probabilities (ends in a Softmax).', default: false }),
    ...featureFlags,
  };

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed'], note: "the feature model and its input are this command's flags" };

  async run(): Promise<MetricReport> {
    const runtime = this.loadConfig(dvaeConfig).runtime;
    const events = this.renderEvents(new CoreEmitter());
    return runMetricCommand(this, 'is', { ...this.flags, fake: this.flags.images }, runtime, events);
  }
}
