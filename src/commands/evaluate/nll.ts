import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { priorConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';
import type { PriorNllResult } from '../../core/eval/nll';
import { modelPathOrBundled } from '../../cli/default-models';

export default class EvaluateNllCommand extends BaseCommand<typeof EvaluateNllCommand> {
  static override summary = "A prior's negative log-likelihood on captioned images: bits per text token and per image token.";

  static override description =
    'Scores every image + caption pair of --data under the prior, as its validation loss does: the first caption of ' +
    'each image BPE-encoded without dropout (cut to the prior\'s text length, padded), the image encoded by the dVAE ' +
    'into argmax codes (read from the dVAE\'s token cache when `dalle train-prior` made one for this data set; else ' +
    'encoded here and not cached). Reports nats and bits per text token (every text position after the first, padding ' +
    'included, as in training) and per image token, averaged in float64, and the image tokens\' bits per pixel value ' +
    '(3 H W; the code\'s cost only, not a pixel likelihood). Without --prior / --dvae the bundled models are used. ' +
    'A data set folder with train/ and val/ sub-folders is measured on val/ unless --split train.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --data data/emoji/val',
    '<%= config.bin %> <%= command.id %> --prior runs/prior-emoji --dvae runs/dvae-emoji --data data/emoji --limit 400 --json',
  ];

  static override flags = {
    prior: Flags.string({ summary: 'A prior run directory (its latest checkpoint) or a checkpoint directory; default: the bundled model.', helpValue: 'RUN' }),
    dvae: Flags.string({ summary: 'The dVAE run the prior was trained on, or a checkpoint directory; default: the bundled model.', helpValue: 'RUN' }),
    data: Flags.string({ summary: 'Captioned images: a folder with .txt captions, a manifest, .tar shards, or a data set with train/ and val/.', required: true, helpValue: 'PATH' }),
    split: Flags.option({ options: ['val', 'train'] as const, summary: 'With a data set folder (train/ and val/): the split to measure (default val).' })(),
    limit: Flags.integer({ summary: 'Measure only the first N images (0 = all).', default: 0, min: 0 }),
    'batch-size': Flags.integer({ summary: 'Examples per forward (memory and speed only).', default: 8, min: 1 }),
  };

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed'], note: "the models' settings come from the --prior and --dvae runs" };

  async run(): Promise<PriorNllResult> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../../core/runtime');
    const { loadDvae } = await import('../../core/models/dvae/load');
    const { loadPrior } = await import('../../core/models/prior/load');
    const { priorNll } = await import('../../core/eval/nll');
    const runtime = this.loadConfig(priorConfig).runtime;
    const priorPath = await modelPathOrBundled(this.config.root, 'prior', this.flags.prior);
    const dvaePath = await modelPathOrBundled(this.config.root, 'dvae', this.flags.dvae);
    const { device } = applyRuntime(runtime, 'evaluate');
    const events = this.renderEvents(new CoreEmitter());
    const prior = loadPrior(priorPath, device);
    try {
      const dvae = loadDvae(dvaePath, device);
      try {
        const r = await priorNll({ prior, dvae, data: this.flags.data, split: this.flags.split, limit: this.flags.limit, batchSize: this.flags['batch-size'], events });
        this.log(
          `${r.images} images of ${r.data}, prior ${r.prior} (update ${r.prior_step}): ` +
            `${r.bits_per_text_token.toFixed(4)} bits (${r.nats_per_text_token.toFixed(4)} nats) per text token, ` +
            `${r.bits_per_image_token.toFixed(4)} bits (${r.nats_per_image_token.toFixed(4)} nats) per image token; ` +
            `${r.bits_per_image.toFixed(1)} bits per image grid = ${r.image_bits_per_dim.toFixed(4)} bits per pixel value` +
            (r.captions_truncated ? `; ${r.captions_truncated} captions cut to ${r.text_tokens_per_example + 1} tokens` : ''),
        );
        return r;
      } finally {
        dvae.model.dispose();
      }
    } finally {
      prior.model.dispose();
    }
  }
}
