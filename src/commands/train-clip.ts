import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { joinTrainingGroup } from '../cli/data-parallel';
import { trainingStopHints } from '../cli/stop-signals';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';
import { CoreEmitter } from '../core/events';
// The engine is loaded inside run(), so `dalle --help` lists this command even where the native addon is not built.
import type { ClipTrainOptions, ClipTrainResult } from '../core/train/clip-trainer';

/** The flags that set a training setting (recorded in RUN/clip.json), and the setting each sets. */
const SETTING_FLAGS = {
  data: 'data',
  val: 'val',
  steps: 'steps',
  'batch-size': 'batchSize',
  lr: 'lr',
  'weight-decay': 'weightDecay',
  warmup: 'warmupSteps',
  augment: 'augment',
  'checkpoint-every': 'checkpointEvery',
  'eval-every': 'evalEvery',
  'val-pool': 'valPool',
} as const;

export default class TrainClipCommand extends BaseCommand<typeof TrainClipCommand> {
  static override summary = 'Train a small CLIP (caption transformer + conv image tower, contrastive loss) on image + caption pairs; Ctrl-C checkpoints and stops.';

  static override description = [
    'Trains dalle\'s own CLIP into --out: a causal text transformer over the caption BPE tokens and a convolutional ' +
      'image tower, projected into one embedding space and trained with the symmetric contrastive loss at a learned ' +
      'temperature. The tokenizer is --tokenizer, or one of --vocab tokens trained on the captions of --data. The run ' +
      '(clip.json, tokenizer.json, metrics.jsonl, checkpoints/) is what `dalle evaluate clip-score --clip RUN` and ' +
      '`dalle evaluate fid --clip RUN` use. Training images get a random scale + shift (--augment). With --val, text -> ' +
      'image top-1 retrieval within pools of 100 val pairs is measured every --eval-every updates and logged to ' +
      'metrics.jsonl; the best checkpoint is kept and RUN/best points at it, and `--clip RUN` then means that ' +
      'checkpoint (chosen on the validation split, not on a test split).',
    'Ctrl-C (SIGINT) or SIGTERM finishes the current update, writes a checkpoint and exits with code 130 or 143; a ' +
      'second signal exits at once. --resume continues from RUN/latest with the settings recorded in RUN/clip.json ' +
      '(flags given override them, e.g. a larger --steps; the tokenizer, architecture and seed are the run\'s): the ' +
      'losses are exactly those of an uninterrupted run. Everything is checked before the first write, so a refused ' +
      'resume leaves RUN as it was; a second command on RUN meanwhile is refused (RUN/.dalle.lock).',
  ].join('\n\n');

  static override examples = [
    '<%= config.bin %> <%= command.id %> --data data/emoji/train --val data/emoji/val --out runs/clip-emoji --steps 2000',
    '<%= config.bin %> <%= command.id %> --data data/emoji/train --out runs/clip-emoji --tokenizer runs/prior/tokenizer.json',
    {
      description: 'Continue an interrupted run, or extend a finished one.',
      command: '<%= config.bin %> <%= command.id %> --out runs/clip-emoji --resume --steps 4000',
    },
  ];

  static override flags = {
    data: Flags.string({ summary: 'Image + caption pairs: a folder with .txt captions, a .jsonl/.csv manifest or .tar shards (required unless --resume).', helpValue: 'PATH' }),
    out: Flags.string({ summary: 'The run directory to write (or to continue with --resume).', required: true, helpValue: 'RUN' }),
    resume: Flags.boolean({ summary: 'Continue from RUN/latest with the settings of RUN/clip.json (flags given override them).', default: false }),
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

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed', 'runtime.dist_timeout_s'], note: "the CLIP's settings are this command's flags (--steps, --lr, ...)" };

  async run(): Promise<ClipTrainResult> {
    const { applyRuntime } = await import('../core/runtime');
    const { ClipTrainer } = await import('../core/train/clip-trainer');
    const runtime = this.loadConfig(dvaeConfig).runtime;
    // Data parallelism: this process as one rank of the launch, joined with the others (one process otherwise).
    const group = await joinTrainingGroup({ runtime });
    const { device } = applyRuntime({ ...runtime, device: group.device }, 'train-clip');
    const { out, resume } = this.flags;
    const number = (flag: 'lr' | 'weight-decay' | 'augment'): number => {
      const v = Number(this.flags[flag]);
      if (!Number.isFinite(v) || v < 0) this.error(`--${flag} ${this.flags[flag]} is not a number >= 0`, { exit: 2 });
      return v;
    };
    if (this.flags.resolution % 16 !== 0) this.error(`--resolution ${this.flags.resolution} is not a multiple of 16 (the image tower halves it 4 times)`, { exit: 2 });
    if (!resume && this.flags.data === undefined) this.error('--data is required (the pairs to train on), unless --resume continues a run', { exit: 2 });
    const kept = ['tokenizer', 'vocab', 'resolution'].filter((flag) => this.given(flag));
    if (resume && kept.length > 0) this.error(`${kept.map((f) => `--${f}`).join(', ')}: a resumed CLIP keeps its own tokenizer and architecture (RUN/clip.json); leave ${kept.length > 1 ? 'them' : 'it'} out`, { exit: 2 });

    const values = {
      data: this.flags.data,
      val: this.flags.val,
      steps: this.flags.steps,
      batchSize: this.flags['batch-size'],
      lr: number('lr'),
      weightDecay: number('weight-decay'),
      warmupSteps: this.flags.warmup,
      augment: number('augment'),
      checkpointEvery: this.flags['checkpoint-every'],
      evalEvery: this.flags['eval-every'],
      valPool: this.flags['val-pool'],
    };
    // A fresh run: every setting (the flags' defaults included). A resumed run: only the flags given, over the run's.
    const settings = Object.fromEntries(
      Object.entries(SETTING_FLAGS).filter(([flag]) => !resume || this.given(flag)).map(([, key]) => [key, values[key]]),
    ) as Partial<ClipTrainOptions>;
    const events = this.renderEvents(new CoreEmitter());
    const trainer = new ClipTrainer({
      ...settings,
      out,
      resume,
      seed: resume ? undefined : runtime.seed,
      device,
      tokenizer: resume ? undefined : this.flags.tokenizer,
      vocab: resume ? undefined : this.flags.vocab,
      arch: resume ? undefined : { resolution: this.flags.resolution },
      events,
      collective: group.collective,
      gradientSync: group.gradientSync,
    });
    const hints = await trainingStopHints('train-clip', out);
    let result;
    try {
      result = await this.runStoppable(trainer, events, hints);
    } finally {
      group.close();
    }
    if (result.stopped) {
      this.logToStderr(`stopped at update ${result.step} of ${result.totalSteps}; checkpoint ${result.checkpoint}\nresume with: ${hints.resume}`);
      process.exitCode = result.stopExitCode ?? this.interruptedExitCode;
      return result;
    }
    this.log(
      `trained ${result.step} updates (${result.parameters} parameters) in ${result.seconds.toFixed(1)} s: loss ${(result.lastLoss ?? NaN).toFixed(4)}, ` +
        `batch top-1 ${(100 * result.batchAccuracy).toFixed(1)}%; checkpoint ${result.checkpoint}` +
        (result.best ? `; best on --val: update ${result.best.step}, text->image top-1 ${(100 * result.best.textToImageTop1).toFixed(1)}% (${result.best.checkpoint})` : ''),
    );
    return result;
  }

  /** Whether --flag was on the command line (a flag left at its default does not override a resumed run's setting). */
  private given(flag: string): boolean {
    return this.argv.some((arg) => arg === `--${flag}` || arg.startsWith(`--${flag}=`));
  }
}
