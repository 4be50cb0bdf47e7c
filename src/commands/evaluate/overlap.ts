import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';
import type { OverlapReport } from '../../core/eval/overlap';

export type OverlapCommandResult = Omit<OverlapReport, 'results'> & {
  readonly results: OverlapReport['results'];
  readonly files?: { json: string; html: string };
};

export default class EvaluateOverlapCommand extends BaseCommand<typeof EvaluateOverlapCommand> {
  static override summary = 'Find training images that are near-duplicates of query images (samples or a test set), with a CLIP image tower.';

  static override description =
    'The DALL-E paper\'s data-overlap check: embeds every image of --train and of --images with the image tower of a ' +
    'dalle CLIP (`dalle train-clip`), and lists for each query image its --top nearest training images by cosine ' +
    'similarity (float64). A query whose nearest training image is at or above --threshold is flagged as a likely ' +
    'duplicate. --out R writes R.json (every query and its neighbours) and R.html (each flagged query beside its ' +
    'nearest training images, thumbnails inline). Similarities are only comparable under the same CLIP: look at the ' +
    'page to choose the threshold for a model.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --clip runs/clip --train data/emoji/train --images out/samples --out reports/overlap',
    '<%= config.bin %> <%= command.id %> --clip runs/clip --train data/emoji/train --images data/emoji/val --threshold 0.98 --top 3 --json',
  ];

  static override flags = {
    clip: Flags.string({ summary: 'A dalle CLIP run directory (`dalle train-clip`) or one of its checkpoint directories.', required: true, helpValue: 'RUN' }),
    train: Flags.string({ summary: 'The training images: a folder, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    images: Flags.string({ summary: 'The query images (generated samples or a test set), in any form --train takes.', required: true, helpValue: 'PATH' }),
    threshold: Flags.string({ summary: 'Flag a query whose nearest training image has at least this cosine similarity, in [-1, 1].', default: '0.95', helpValue: 'T' }),
    top: Flags.integer({ summary: 'Nearest training images listed per query.', default: 5, min: 1 }),
    out: Flags.string({ summary: 'Write the report to OUT.json and OUT.html.', helpValue: 'OUT' }),
    'batch-size': Flags.integer({ summary: 'Images per call of the image tower.', default: 64, min: 1 }),
    limit: Flags.integer({ summary: 'Use only the first N images of each set (0 = all).', default: 0, min: 0 }),
  };

  static override configUse: ConfigUse = { keys: ENGINE_KEYS, note: "the CLIP's settings come from the --clip run" };

  async run(): Promise<OverlapCommandResult> {
    const threshold = Number(this.flags.threshold);
    if (this.flags.threshold.trim() === '' || !(threshold >= -1 && threshold <= 1)) {
      this.error(`--threshold must be a cosine similarity in [-1, 1], got ${JSON.stringify(this.flags.threshold)}`, { exit: 2, suggestions: ['e.g. --threshold 0.95'] });
    }
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../../core/runtime');
    const { openClipScorer } = await import('../../core/models/clip/scorer');
    const { findOverlap, writeOverlapReport } = await import('../../core/eval/overlap');
    const { preflightReport } = await import('../../core/eval/report');
    if (this.flags.out !== undefined) preflightReport(this.flags.out); // a bad --out fails before the embedding
    const { device } = applyRuntime(this.loadConfig(dvaeConfig).runtime, 'evaluate');
    const events = this.renderEvents(new CoreEmitter());
    const scorer = await openClipScorer(this.flags.clip, device);
    try {
      const report = await findOverlap({
        scorer,
        train: this.flags.train,
        queries: this.flags.images,
        threshold,
        topK: this.flags.top,
        limit: this.flags.limit,
        batchSize: this.flags['batch-size'],
        events,
      });
      const s = report.nearestSimilarity;
      this.log(
        `${report.flagged} of ${report.queries.images} query images flagged (nearest training image at cosine >= ${threshold}) ` +
          `among ${report.train.images} training images; nearest-neighbour cosine min ${s.min.toFixed(4)}, median ${s.median.toFixed(4)}, max ${s.max.toFixed(4)} (${report.clip.name})`,
      );
      for (const r of report.results.filter((x) => x.flagged).slice(0, 10)) {
        this.log(`  ${r.id} ~ ${r.nearest[0].id} (cos ${r.nearest[0].similarity.toFixed(4)})`);
      }
      if (report.flagged > 10) this.log(`  ... and ${report.flagged - 10} more (see the report)`);
      if (this.flags.out === undefined) return report;
      const files = await writeOverlapReport(this.flags.out, report);
      events.emit({ type: 'artifact', kind: 'report', path: files.json });
      events.emit({ type: 'artifact', kind: 'report', path: files.html });
      this.log(`report: ${files.json}, ${files.html}`);
      return { ...report, files };
    } finally {
      await scorer.dispose();
    }
  }
}
