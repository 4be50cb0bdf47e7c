import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';
import type { ClipScoreResult } from '../../core/models/clip/evaluate';

export default class EvaluateClipScoreCommand extends BaseCommand<typeof EvaluateClipScoreCommand> {
  static override summary = 'CLIP score and text <-> image retrieval of image + caption pairs under a trained dalle CLIP.';

  static override description =
    'Embeds every image of --data and its first caption with the CLIP of --clip (a `dalle train-clip` run, or a Hugging Face-style ONNX CLIP folder such as ' +
    '`dalle export --clip` writes) and reports ' +
    'the CLIP score, 100 * max(cosine, 0) averaged over the pairs, and top-1 retrieval accuracy within consecutive ' +
    'pools of --pool pairs: text -> image (each caption picks one of the pool\'s images) and image -> text.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --clip runs/clip-emoji --data data/emoji/zeroshot --pool 100',
  ];

  static override flags = {
    clip: Flags.string({ summary: 'A CLIP run directory (its best checkpoint by validation, else its latest), a checkpoint directory, or an ONNX CLIP folder (text_model.onnx + vision_model.onnx or model.onnx, tokenizer.json, preprocessor_config.json).', required: true, helpValue: 'RUN|DIR' }),
    data: Flags.string({ summary: 'Image + caption pairs: a folder with .txt captions, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    pool: Flags.integer({ summary: 'Pairs per retrieval pool (the chance level is 1 / pool).', default: 100, min: 2 }),
    limit: Flags.integer({ summary: 'Use only the first N pairs (0 = all).', default: 0, min: 0 }),
  };

  static override configUse: ConfigUse = { keys: ENGINE_KEYS, note: "the CLIP's settings come from the --clip run" };

  async run(): Promise<ClipScoreResult & { checkpoint: string; step: number }> {
    const { applyRuntime } = await import('../../core/runtime');
    const { openClipScorer } = await import('../../core/models/clip/scorer');
    const { clipScore } = await import('../../core/models/clip/evaluate');
    const { device } = applyRuntime(this.loadConfig(dvaeConfig).runtime, 'evaluate');
    const events = this.renderEvents(new CoreEmitter());
    const scorer = await openClipScorer(this.flags.clip, device);
    const clip = { checkpoint: String(scorer.details.checkpoint ?? scorer.name), step: Number(scorer.details.step ?? NaN) };
    try {
      const r = await clipScore(scorer, this.flags.data, { limit: this.flags.limit, pool: this.flags.pool, events });
      const pct = (v: number) => (Number.isNaN(v) ? 'n/a (fewer pairs than one pool)' : `${(100 * v).toFixed(1)}%`);
      this.log(
        `${r.pairs} pairs, CLIP ${clip.checkpoint} (update ${clip.step}): CLIP score ${r.clipScore.toFixed(2)}; ` +
          `top-1 in ${r.pools} pool(s) of ${r.pool}: text->image ${pct(r.textToImageTop1)}, image->text ${pct(r.imageToTextTop1)}` +
          (r.skipped.total ? `; ${r.skipped.total} skipped` : ''),
      );
      return { ...r, checkpoint: clip.checkpoint, step: clip.step };
    } finally {
      await scorer.dispose();
    }
  }
}
