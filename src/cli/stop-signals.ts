/**
 * The one signal path of every command, for SIGINT (Ctrl-C) and SIGTERM (what Slurm and Kubernetes send before they
 * kill a job):
 *   - while a stoppable job runs (a training loop, through `run`): the first signal asks it to finish the current
 *     update and write a checkpoint, and the command then exits with 128 + that signal's number (130, 143). A second
 *     signal exits at once, saying how to go on: resume from the newest checkpoint when there is one, else start over;
 *   - a command that listens for the signal itself (generate's Ctrl-C finishes its batch) is left to do so;
 *   - otherwise the command exits at once, with 128 + the signal's number.
 * Exits go through process.exit, so 'exit' listeners run: the lock of the folder being written is released
 * (core/io/run-lock.ts).
 */
import * as os from 'node:os';
import { EventSink } from '../core/events';

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/** A long job that a signal can ask to stop at a safe point (a training loop). */
export interface StoppableJob<R> {
  /** `exitCode`: the signal's (128 + its number), for a job that reports it back (a data-parallel training run). */
  stop(exitCode?: number): void;
  readonly stopping: boolean;
  run(): Promise<R>;
}

/** What a second signal prints: how to go on, which depends on whether a checkpoint exists by then. */
export interface StopHints {
  /** The command that continues from the newest checkpoint. */
  readonly resume: string;
  /** Whether there is a checkpoint to resume from (asked when the second signal comes). */
  readonly hasCheckpoint: () => boolean;
  /** What to do when there is none. */
  readonly startOver: string;
}

/** Exit status of a command ended by `signal`, as shells report it: 128 + its number (SIGINT 130, SIGTERM 143). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (os.constants.signals[signal] ?? 0);
}

/** The signal listeners of one command run (install when it starts, uninstall when it ends). */
export class StopSignals {
  private current?: { readonly job: StoppableJob<unknown>; readonly events: EventSink; readonly hints: StopHints };
  /** The signal that asked the job of `run` to stop, if one did. */
  stoppedBy?: NodeJS.Signals;
  // One listener per signal, each knowing its signal (process.emit('SIGINT') passes no name, a real signal does).
  private readonly listeners = STOP_SIGNALS.map((signal) => [signal, (): void => this.handle(signal)] as const);

  install(): void {
    for (const [signal, listener] of this.listeners) process.on(signal, listener);
  }

  uninstall(): void {
    for (const [signal, listener] of this.listeners) process.off(signal, listener);
  }

  /** Runs `job` with the first signal wired to job.stop() (see the module comment). */
  async run<R>(job: StoppableJob<R>, events: EventSink, hints: StopHints): Promise<R> {
    this.current = { job, events, hints };
    try {
      return await job.run();
    } finally {
      this.current = undefined;
    }
  }

  private handle(signal: NodeJS.Signals): void {
    const current = this.current;
    if (current && !current.job.stopping) {
      this.stoppedBy = signal;
      current.events.emit({ type: 'log', level: 'warn', message: `${signal}: finishing this update and writing a checkpoint (a second signal exits at once)` });
      current.job.stop(signalExitCode(signal));
      return;
    }
    if (current) {
      const { hints } = current;
      process.stderr.write(
        hints.hasCheckpoint()
          ? `${signal} again: exiting without a new checkpoint; resume from the last one with: ${hints.resume}\n`
          : `${signal} again: exiting before any checkpoint was written, so there is nothing to resume; ${hints.startOver}\n`,
      );
      process.exit(signalExitCode(signal));
    }
    if (process.listenerCount(signal) > 1) return; // the command stops on it itself
    process.exit(signalExitCode(signal));
  }
}

/** The hints of a training command (`train-dvae`, `train-prior`) on run directory `out`. */
export async function trainingStopHints(command: string, out: string): Promise<StopHints> {
  // Loaded here, not at the top: every command imports this module, and the checkpoint code needs the engine.
  const { hasResumableCheckpoint } = await import('../core/train/run-folder');
  return {
    resume: `dalle ${command} --out ${out} --resume`,
    hasCheckpoint: () => hasResumableCheckpoint(out),
    startOver: 'start over by running the same command again',
  };
}
