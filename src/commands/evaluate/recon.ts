import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../../cli/config-use';
import { dvaeConfig } from '../../core/config';
import { CoreEmitter } from '../../core/events';

export interface ReconCommandResult {
  readonly checkpoint: string;
  readonly step: number;
  readonly images: number;
  /** Mean per-image PSNR of decode(encode(x)) in dB (pixels in [0, 1]). */
  readonly psnr: number;
  /** exp(entropy) of the code histogram over the data set, and codes never used. */
  readonly perplexity: number;
  readonly deadCodes: number;
  readonly vocabSize: number;
  readonly skipped: number;
}

export default class EvaluateReconCommand extends BaseCommand<typeof EvaluateReconCommand> {
  static override summary = "Measure a dVAE's reconstructions on a data set: PSNR and codebook usage.";

  static override description =
    'Encodes every image of --data once, in order (argmax codes, no noise), decodes the codes and compares: mean ' +
    'per-image PSNR in dB, the perplexity of the code histogram (how many codes are effectively used) and the codes ' +
    'never used. Images that cannot be read are skipped and counted.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji --data data/emoji/val',
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji/checkpoints/step-5000 --data data/emoji/val --limit 200 --json',
  ];

  static override flags = {
    dvae: Flags.string({ summary: 'A dVAE run directory (its latest checkpoint) or a checkpoint directory.', required: true, helpValue: 'RUN' }),
    data: Flags.string({ summary: 'Images: a folder, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    limit: Flags.integer({ summary: 'Evaluate only the first N images (0 = all).', default: 0, min: 0 }),
    'batch-size': Flags.integer({ summary: 'Images at a time.', default: 32, min: 1 }),
  };

  static override configUse: ConfigUse = { keys: ENGINE_KEYS, note: "the dVAE's settings come from the --dvae run" };

  async run(): Promise<ReconCommandResult> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../../core/runtime');
    const { loadDvae } = await import('../../core/models/dvae/load');
    const { evaluateDvaeRecon } = await import('../../core/eval/dvae-recon');
    const { device } = applyRuntime(this.loadConfig(dvaeConfig).runtime, 'evaluate');
    const events = this.renderEvents(new CoreEmitter());
    const dvae = loadDvae(this.flags.dvae, device);
    try {
      const r = await evaluateDvaeRecon(dvae.model, this.flags.data, {
        resolution: dvae.resolution,
        batchSize: this.flags['batch-size'],
        limit: this.flags.limit,
        events,
      });
      const result: ReconCommandResult = {
        checkpoint: dvae.checkpoint, step: dvae.step, vocabSize: dvae.model.arch.vocab_size, ...r,
      };
      this.log(
        `${result.images} images, checkpoint ${result.checkpoint} (update ${result.step}): PSNR ${result.psnr.toFixed(2)} dB, ` +
          `codebook perplexity ${result.perplexity.toFixed(1)} of ${result.vocabSize}, ${result.deadCodes} codes unused` +
          (result.skipped ? `, ${result.skipped} images skipped` : ''),
      );
      return result;
    } finally {
      dvae.model.dispose();
    }
  }
}
