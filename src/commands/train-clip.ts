import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';
import { CoreEmitter } from '../core/events';
import type { ClipTrainResult } from '../core/models/clip/train';

export default class TrainClipCommand extends BaseCommand<typeof TrainClipCommand> {
  static override summary = 'Train a small CLIP (caption transformer + conv image tower, contrastive loss) on image + caption pairs.';

  static override description =
    'Trains dalle\'s own CLIP into --out: a causal text transformer over the caption BPE tokens and a convolutional ' +
    'image tower, projected into one embedding space and trained with the symmetric contrastive loss at a learned ' +
    'temperature. The tokenizer is --tokenizer, or one of --vocab tokens trained on the captions of --data. The run ' +
    '(clip.json, tokenizer.json, metrics.jsonl, checkpoints/) is what `dalle evaluate clip-score --clip RUN` and ' +
    '`dalle evaluate fid --clip RUN` use. Training images get a random scale + shift (--augment). With --val, text -> ' +
    'image top-1 retrieval within pools of 100 val pairs is measured every --eval-every updates and logged to ' +
    'metrics.jsonl; the best checkpoint is kept and RUN/best points at it, and `--clip RUN` then means that ' +
    'checkpoint (chosen on the validation split, not on a test split). A run starts from scratch, into a folder without ' +
    'checkpoints: there is no --resume yet (a signal ends it at once).';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --data data/emoji/train --val data/emoji/val --out runs/clip-emoji --steps 2000',
    '<%= config.bin %> <%= command.id %> --data data/emoji/train --out runs/clip-emoji --tokenizer runs/prior/tokenizer.json',
  ];

  static override flags = {
    data: Flags.string({ summary: 'Image + caption pairs: a folder with .txt captions, a .jsonl/.csv manifest or .tar shards.', required: true, helpValue: 'PATH' }),
    out: Flags.string({ summary: 'The run directory to write.', required: true, helpValue: 'RUN' }),
    steps: Flags.integer({ summary: 'Updates to train for.', default: 2000, min: 1 }),
    'batch-size': Flags.integer({ summary: 'Pairs per update (each is contrasted with the others of its batch).', default: 64, min: 2 }),
    lr: Flags.string({ summary: 'Peak learning rate (linear warmup, then cosine decay to 5% of it).', default: '1e-3' }),
    'weight-decay': Flags.string({ summary: 'AdamW weight decay of the weight matrices and kernels.', default: '0.1' }),
    warmup: Flags.integer({ summary: 'Warmup updates.', default: 50, min: 0 }),
    tokenizer: Flags.string({ summary: 'A tokenizer.json to use (default: train one on the captions).', helpValue: 'FILE' }),
    vocab: Flags.integer({ summary: 'Vocabulary size of the tokenizer trained when --tokenizer is not given.', default: 1024, min: 256 }),
    resolution: Flags.integer({ summary: 'Image side the tower is trained at (a multiple of 16).', default: 32, min: 16 }),
    'checkpoint-every': Flags.integer({ summary: 'Write a checkpoint every N updates (0 = only at the end).', default: 500, min: 0 }),
    val: Flags.string({ summary: 'Held-out image + caption pairs: retrieval measured every --eval-every updates picks the best checkpoint.', helpValue: 'PATH' }),
    'eval-every': Flags.integer({ summary: 'Updates between validation measurements (with --val).', default: 100, min: 1 }),
    'val-pool': Flags.integer({ summary: 'Pairs per retrieval pool on --val.', default: 100, min: 2 }),
    augment: Flags.string({ summary: 'Random scale and shift of the training images: the largest relative change (0 = none).', default: '0.1' }),
  };

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed'], note: "the CLIP's settings are this command's flags (--steps, --lr, ...)" };

  async run(): Promise<ClipTrainResult> {
    const { applyRuntime } = await import('../core/runtime');
    const { trainClip } = await import('../core/models/clip/train');
    const runtime = this.loadConfig(dvaeConfig).runtime;
    const { device } = applyRuntime(runtime, 'train-clip');
    const number = (flag: 'lr' | 'weight-decay' | 'augment'): number => {
      const v = Number(this.flags[flag]);
      if (!Number.isFinite(v) || v < 0) this.error(`--${flag} ${this.flags[flag]} is not a number >= 0`, { exit: 2 });
      return v;
    };
    if (this.flags.resolution % 16 !== 0) this.error(`--resolution ${this.flags.resolution} is not a multiple of 16 (the image tower halves it 4 times)`, { exit: 2 });
    const events = this.renderEvents(new CoreEmitter());
    const result = await trainClip({
      data: this.flags.data,
      out: this.flags.out,
      steps: this.flags.steps,
      batchSize: this.flags['batch-size'],
      lr: number('lr'),
      weightDecay: number('weight-decay'),
      warmupSteps: this.flags.warmup,
      seed: runtime.seed,
      device,
      tokenizer: this.flags.tokenizer,
      vocab: this.flags.vocab,
      arch: { resolution: this.flags.resolution },
      checkpointEvery: this.flags['checkpoint-every'],
      augment: number('augment'),
      val: this.flags.val,
      evalEvery: this.flags['eval-every'],
      valPool: this.flags['val-pool'],
      events,
    });
    this.log(
      `trained ${result.steps} updates (${result.parameters} parameters) in ${result.seconds.toFixed(1)} s: loss ${result.loss.toFixed(4)}, ` +
        `batch top-1 ${(100 * result.batchAccuracy).toFixed(1)}%; checkpoint ${result.checkpoint}` +
        (result.best ? `; best on --val: update ${result.best.step}, text->image top-1 ${(100 * result.best.textToImageTop1).toFixed(1)}% (${result.best.checkpoint})` : ''),
    );
    return result;
  }
}
