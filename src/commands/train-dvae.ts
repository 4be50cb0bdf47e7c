import * as fs from 'node:fs';
import * as path from 'node:path';
import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { joinTrainingGroup } from '../cli/data-parallel';
import { trainingStopHints } from '../cli/stop-signals';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig, DvaeConfig, resolveConfig, RUN_CONFIG_FILE } from '../core/config';
import { CoreEmitter } from '../core/events';
// The engine is loaded inside run(), so `dalle --help` lists this command even where the native addon is not built.
import type { DvaeTrainResult } from '../core/train/dvae-trainer';

export default class TrainDvaeCommand extends BaseCommand<typeof TrainDvaeCommand> {
  static override summary = 'Train the dVAE (images <-> token grids) into a run directory; Ctrl-C checkpoints and stops.';

  static override description = [
    'Writes RUN/config.yaml (the resolved config), RUN/metrics.jsonl (a line every train.log_every updates), ' +
      'RUN/samples/step-N.png (originals over reconstructions every train.sample_every), and ' +
      'RUN/checkpoints/step-N (every train.checkpoint_every and at the end; RUN/latest names the newest).',
    'Ctrl-C (SIGINT) or SIGTERM finishes the current update, writes a checkpoint and exits with code 130 or 143; a ' +
      "second signal exits at once. --resume continues from RUN/latest with the run's own config.yaml (plus --set " +
      'overrides, e.g. a larger train.steps): the losses are exactly those of an uninterrupted run. Everything is ' +
      'checked before the first write, so a refused resume leaves RUN as it was; a second command on RUN meanwhile is ' +
      'refused (RUN/.dalle.lock).',
  ].join('\n\n');

  static override examples = [
    {
      description: 'The small emoji dVAE.',
      command: '<%= config.bin %> <%= command.id %> --config configs/dvae-emoji.yaml --data data/emoji/train --out runs/dvae-emoji',
    },
    {
      description: 'Continue an interrupted run, or extend a finished one.',
      command: '<%= config.bin %> <%= command.id %> --out runs/dvae-emoji --resume --set train.steps=40000',
    },
  ];

  static override flags = {
    data: Flags.string({ summary: 'Training images (sets data.path): a folder, a .jsonl/.csv manifest or .tar shards.', helpValue: 'PATH' }),
    out: Flags.string({ char: 'o', summary: 'Run directory to create (or to continue with --resume).', required: true, helpValue: 'RUN' }),
    resume: Flags.boolean({ summary: "Continue from RUN/latest with the run's config.yaml.", default: false }),
  };

  // runtime.precision is not among them: the dVAE trains in fp32 (mixed precision is the prior's).
  static override configUse: ConfigUse = {
    keys: [...ENGINE_KEYS, 'runtime.seed', 'runtime.dist_timeout_s', 'model', 'data', 'train'],
    note: 'the dVAE trains in fp32 only',
  };

  /** With --resume the architecture is the run's own (RUN/config.yaml): model.* cannot change under its weights. */
  protected override configUse(): ConfigUse {
    const { keys } = TrainDvaeCommand.configUse;
    if (!this.flags.resume) return TrainDvaeCommand.configUse;
    return { keys: keys.filter((key) => key !== 'model'), note: "with --resume the model is the run's (RUN/config.yaml), and the dVAE trains in fp32 only" };
  }

  async run(): Promise<DvaeTrainResult> {
    const { out, resume, data } = this.flags;
    const resolved = this.resolveTrainConfig(out, resume, data);
    const { applyRuntime } = await import('../core/runtime');
    const { DvaeTrainer } = await import('../core/train/dvae-trainer');
    // Data parallelism: this process as one rank of the launch (dalle launch, srun, torchrun variables, an Indexed
    // Job), joined with the others; one process otherwise. A rank's device: cuda -> cuda:LOCAL_RANK.
    const group = await joinTrainingGroup(resolved);
    const config = { ...resolved, runtime: { ...resolved.runtime, device: group.device } };
    applyRuntime(config.runtime, 'train-dvae'); // the trainer places its work on runtime.device
    const events = this.renderEvents(new CoreEmitter());
    const trainer = new DvaeTrainer({ config, out, resume, events, collective: group.collective, gradientSync: group.gradientSync });
    const hints = await trainingStopHints('train-dvae', out);
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
      this.log(`trained ${result.step} updates; checkpoint ${result.checkpoint}`);
    }
    return result;
  }

  /** Fresh: defaults < --config < --set. Resume: the run's config.yaml < --set (the architecture comes from the run). */
  private resolveTrainConfig(out: string, resume: boolean, data: string | undefined): DvaeConfig {
    const sets = this.configOverrides();
    if (data !== undefined) sets.push({ keyPath: 'data.path', text: data, argument: `--data ${data}` });
    const runConfig = path.join(out, RUN_CONFIG_FILE);
    if (resume && fs.existsSync(runConfig)) {
      if (this.flags.config !== undefined) this.warn(`--resume uses ${runConfig}; --config ${this.flags.config} is ignored (use --set to change values)`);
      return resolveConfig(dvaeConfig, { file: runConfig, sets });
    }
    return resolveConfig(dvaeConfig, { file: this.flags.config, sets });
  }
}
