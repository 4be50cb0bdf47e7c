import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, NO_CONFIG } from '../../cli/config-use';
import { inspectDataset, InspectReport } from '../../core/data';
import { checkDatasetUsable } from '../../core/data/inspect';
import { CoreEmitter } from '../../core/events';

export default class DatasetInspectCommand extends BaseCommand<typeof DatasetInspectCommand> {
  static override summary = 'Count the images and captions of a data set and show what would be skipped, and why.';

  static override description =
    'PATH is a folder of images with same-name .txt captions, a .jsonl or .csv manifest, a .tar shard, or a folder ' +
    'of .tar shards (webdataset style). Indexing finds non-images, bad manifest lines, missing files and cut-off ' +
    'shards; decoding the first --decode records finds corrupt and truncated images. Run it before a long job. It ' +
    'exits with code 4 when nothing can be used: no images, or none of those decoded could be read.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> data/emoji/train',
    '<%= config.bin %> <%= command.id %> data/emoji/val/manifest.jsonl --decode 1000000',
    '<%= config.bin %> <%= command.id %> shards/ --json',
  ];

  static override args = {
    path: Args.string({ description: 'Folder, manifest (.jsonl, .csv) or .tar shard(s).', required: true }),
  };

  static override flags = {
    decode: Flags.integer({ summary: 'Decode the first N records to find bad images; 0 = none.', default: 64, min: 0 }),
    examples: Flags.integer({ summary: 'Captions to show.', default: 5, min: 0 }),
  };

  static override configUse: ConfigUse = NO_CONFIG;

  async run(): Promise<InspectReport> {
    const events = this.renderEvents(new CoreEmitter());
    const report = await inspectDataset(this.args.path, {
      decode: this.flags.decode,
      examples: this.flags.examples,
      events,
    });
    this.log(`${report.path}: ${report.kind}, ${report.records} records, ${report.withCaptions} with captions ` +
      `(${report.captions} captions)`);
    this.log(`decoded ${report.decodeCheck.checked}: ${report.decodeCheck.failed} failed`);
    this.log(`skipped ${report.skipped.total}${formatReasons(report.skipped.byReason)}`);
    for (const example of report.skipped.examples) this.log(`  ${example.reason}: ${example.id}: ${example.detail}`);
    for (const example of report.examples) this.log(`  "${example.captions[0]}"  (${example.id})`);
    checkDatasetUsable(report); // after the report, so the reasons are printed above the error
    return report;
  }
}

function formatReasons(byReason: Readonly<Record<string, number | undefined>>): string {
  const parts = Object.entries(byReason).map(([reason, count]) => `${reason} ${count ?? 0}`);
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`;
}
