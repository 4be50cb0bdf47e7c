import * as fs from 'node:fs';
import * as path from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { joinTrainingGroup } from '../cli/data-parallel';
import { trainingStopHints } from '../cli/stop-signals';
import { ConfigUse } from '../cli/config-use';
import { priorConfig, PriorConfig, resolveConfig, RUN_CONFIG_FILE } from '../core/config';
import { CoreEmitter } from '../core/events';
// The engine is loaded inside run(), so `dalle --help` lists this command even where the native addon is not built.
import type { PriorTrainResult } from '../core/train/prior-trainer';

export default class TrainPriorCommand extends BaseCommand<typeof TrainPriorCommand> {
  static override summary = 'Train the transformer prior (captions -> image tokens) into a run directory; Ctrl-C checkpoints and stops.';

  static override description = [
    'Encodes the data set once with the dVAE (cached in DVAE_RUN/token-cache/KEY, reused while the checkpoint and the ' +
      'data are unchanged), trains a BPE tokenizer on the training captions unless --tokenizer is given ' +
      '(RUN/tokenizer.json), then trains. Writes RUN/config.yaml, RUN/metrics.jsonl (a line every train.log_every ' +
      'updates, and the val split\'s loss per text and image token every train.val_every), and RUN/checkpoints/step-N.',
    '--data DIR with train/ and val/ sub-folders (as `dalle dataset emoji` writes) validates on val/; any other data ' +
      'source is used whole for training. Ctrl-C (SIGINT) or SIGTERM finishes the current update, writes a checkpoint ' +
      "and exits with code 130 or 143; a second signal exits at once. --resume continues from RUN/latest with the run's " +
      'own config.yaml (plus --set overrides): the losses are exactly those of an uninterrupted run. Everything is ' +
      'checked before the first write, so a refused resume leaves RUN as it was; a second command on RUN meanwhile is ' +
      'refused (RUN/.dalle.lock).',
  ].join('\n\n');

  static override examples = [
    {
      description: 'The small emoji prior over the emoji dVAE.',
      command: '<%= config.bin %> <%= command.id %> --config configs/prior-emoji.yaml --data data/emoji --dvae runs/dvae-emoji --out runs/prior-emoji',
    },
    {
      description: 'Continue an interrupted run, or extend a finished one.',
      command: '<%= config.bin %> <%= command.id %> --out runs/prior-emoji --resume --set train.steps=40000',
    },
  ];

  static override flags = {
    data: Flags.string({ summary: 'Captioned images (sets data.path): a folder with train/ and val/, or one folder, manifest or .tar shards.', helpValue: 'DIR' }),
    dvae: Flags.string({ summary: 'The dVAE run (or checkpoint) whose token grids the prior learns (sets data.dvae).', helpValue: 'RUN' }),
    out: Flags.string({ char: 'o', summary: 'Run directory to create (or to continue with --resume).', required: true, helpValue: 'RUN' }),
    tokenizer: Flags.string({ summary: 'A tokenizer.json to use instead of training one on the captions.', helpValue: 'FILE' }),
    resume: Flags.boolean({ summary: "Continue from RUN/latest with the run's config.yaml and tokenizer.", default: false }),
  };

  static override configUse: ConfigUse = { keys: ['runtime', 'model', 'data', 'train'] };

  /** With --resume the architecture is the run's own (RUN/config.yaml): model.* cannot change under its weights. */
  protected override configUse(): ConfigUse {
    if (!this.flags.resume) return TrainPriorCommand.configUse;
    return { keys: ['runtime', 'data', 'train'], note: "with --resume the model is the run's (RUN/config.yaml)" };
  }

  async run(): Promise<PriorTrainResult> {
    const { out, resume, data, dvae, tokenizer } = this.flags;
    const resolved = this.resolveTrainConfig(out, resume, data, dvae);
    const { applyRuntime } = await import('../core/runtime');
    const { PriorTrainer } = await import('../core/train/prior-trainer');
    // Data parallelism: this process as one rank of the launch (dalle launch, srun, torchrun variables, an Indexed
    // Job), joined with the others; one process otherwise. A rank's device: cuda -> cuda:LOCAL_RANK.
    const group = await joinTrainingGroup(resolved);
    const config = { ...resolved, runtime: { ...resolved.runtime, device: group.device } };
    applyRuntime(config.runtime, 'train-prior'); // the trainer places its work on runtime.device
    const events = this.renderEvents(new CoreEmitter());
    const trainer = new PriorTrainer({ config, out, resume, tokenizer, events, collective: group.collective, gradientSync: group.gradientSync });
    const hints = await trainingStopHints('train-prior', out);
    let result;
    try {
      result = await this.runStoppable(trainer, events, hints);
    } finally {
      group.close();
    }
    if (result.stopped) {
      this.logToStderr(`stopped at update ${result.step} of ${result.totalSteps}; checkpoint ${result.checkpoint}\nresume with: ${hints.resume}`);
      process.exitCode = result.stopExitCode ?? this.interruptedExitCode;
    } else {
      const val = result.lastVal ? `; val loss ${result.lastVal.val_loss.toFixed(4)} (image ${result.lastVal.val_image_loss.toFixed(4)} nats/token)` : '';
      this.log(`trained ${result.step} updates; checkpoint ${result.checkpoint}${val}`);
    }
    return result;
  }

  /** Fresh: defaults < --config < --set < --data/--dvae. Resume: the run's config.yaml < --set < --data/--dvae. */
  private resolveTrainConfig(out: string, resume: boolean, data: string | undefined, dvae: string | undefined): PriorConfig {
    const sets = this.configOverrides();
    if (data !== undefined) sets.push({ keyPath: 'data.path', text: data, argument: `--data ${data}` });
    if (dvae !== undefined) sets.push({ keyPath: 'data.dvae', text: dvae, argument: `--dvae ${dvae}` });
    const runConfig = path.join(out, RUN_CONFIG_FILE);
    if (resume && fs.existsSync(runConfig)) {
      if (this.flags.config !== undefined) this.warn(`--resume uses ${runConfig}; --config ${this.flags.config} is ignored (use --set to change values)`);
      return resolveConfig(priorConfig, { file: runConfig, sets });
    }
    return resolveConfig(priorConfig, { file: this.flags.config, sets });
  }
}
