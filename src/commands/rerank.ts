import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';
import { CoreEmitter } from '../core/events';
import type { RerankSummary } from '../core/sample/rerank';
import { readCaptions } from './generate';

export default class RerankCommand extends BaseCommand<typeof RerankCommand> {
  static override summary = 'Rerank generated images by CLIP score against their captions and keep the best K per caption.';

  static override description =
    'Scores every candidate image against its caption with the CLIP of --clip (a `dalle train-clip` run): CLIP score = ' +
    '100 * max(cosine, 0). DIR is a `dalle generate` output folder: each results.jsonl record gains clip_score, rank ' +
    '(1 = best of its caption\'s candidates) and kept (rank <= --keep); the kept PNGs are copied to DIR/best/, the ' +
    'means go to DIR/rerank.json, and DIR/index.html shows each caption\'s candidates sorted by rank with their scores. ' +
    'Without DIR, --images DIR holds PNGs named as generate names them, c<caption>-s<sample>.png, where <caption> is ' +
    'the 0-based line of --captions FILE (blank lines skipped); the same files are written into that folder. ' +
    'Reranking again reuses the scores made under the same CLIP (--rescore scores everything again). Rerank a sharded ' +
    'job after every shard has finished. A DIR without generation.json or rerank.json, or an --images DIR holding a ' +
    'results.jsonl, index.html or best/ that rerank did not write, is refused before the CLIP is loaded.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --clip runs/clip-emoji out/apple --keep 1',
    '<%= config.bin %> <%= command.id %> --clip runs/clip-emoji --captions captions.txt --images my-images --keep 2 --json',
  ];

  static override args = {
    dir: Args.string({ description: 'A `dalle generate` output folder (results.jsonl and its PNGs).', required: false }),
  };

  static override flags = {
    clip: Flags.string({ summary: 'A CLIP run directory (its latest checkpoint) or a checkpoint directory.', required: true, helpValue: 'RUN' }),
    keep: Flags.integer({ char: 'k', summary: 'Candidates kept per caption (marked kept, copied to DIR/best/).', default: 1, min: 1 }),
    captions: Flags.string({ summary: 'With --images: one caption a line; line i (from 0) is caption i of c<i>-s<j>.png.', helpValue: 'FILE|-' }),
    images: Flags.string({ summary: 'A folder of PNGs named c<caption>-s<sample>.png, with --captions.', helpValue: 'DIR' }),
    rescore: Flags.boolean({ summary: 'Score every image again, even those already scored under this CLIP.', default: false }),
    partial: Flags.boolean({ summary: 'Rank a generate folder that lacks some of its images (a job still running).', default: false }),
    batch: Flags.integer({ char: 'b', summary: 'Images embedded at a time (memory only).', default: 32, min: 1 }),
  };

  static override configUse: ConfigUse = { keys: ENGINE_KEYS, note: "the CLIP's settings come from the --clip run" };

  async run(): Promise<RerankSummary> {
    const { applyRuntime } = await import('../core/runtime');
    const { openClipScorer } = await import('../core/models/clip/scorer');
    const { RerankError, checkGenerationFolder, checkImagesFolder, rerankFolder, rerankGeneration } = await import('../core/sample/rerank');
    const { dir } = this.args;
    const { captions, images } = this.flags;
    if (dir !== undefined && (captions !== undefined || images !== undefined)) {
      this.error('give either a generate folder DIR, or --captions FILE with --images DIR, not both', { exit: 2 });
    }
    if (dir === undefined && (captions === undefined || images === undefined)) {
      this.error('nothing to rerank: give a `dalle generate` folder (dalle rerank --clip RUN DIR), or --captions FILE --images DIR', { exit: 2 });
    }
    const captionList = captions !== undefined ? readCaptions(captions, RerankError) : [];
    // The folder is rerank's to write (a generate folder, or images without foreign results), checked before the CLIP loads.
    if (dir !== undefined) checkGenerationFolder(dir);
    else checkImagesFolder(images!);
    const { device } = applyRuntime(this.loadConfig(dvaeConfig).runtime, 'rerank');
    const events = this.renderEvents(new CoreEmitter());
    this.lockFolder(dir ?? images!, events); // it rewrites results.jsonl, best/ and index.html there
    const scorer = await openClipScorer(this.flags.clip, device);
    try {
      const options = { keep: this.flags.keep, rescore: this.flags.rescore, partial: this.flags.partial, batch: this.flags.batch, events };
      const summary = dir !== undefined ? await rerankGeneration(scorer, dir, options) : await rerankFolder(scorer, captionList, images!, options);
      this.log(
        `reranked ${summary.candidates} images of ${summary.captions} captions (${summary.scored} scored${summary.reused ? `, ${summary.reused} scored before` : ''}): ` +
          `mean CLIP score ${summary.meanClipScore.toFixed(2)} of all, ${summary.meanKeptClipScore.toFixed(2)} of the best ${summary.keep} per caption ` +
          `(${summary.kept} kept, in ${summary.best}); gallery ${summary.gallery}`,
      );
      return summary;
    } finally {
      await scorer.dispose();
    }
  }
}
