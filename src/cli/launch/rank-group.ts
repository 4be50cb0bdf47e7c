/**
 * The N processes of `dalle launch` on this machine, and what happens to them:
 *
 * - Each child gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (= N: one machine), MASTER_ADDR, MASTER_PORT and
 *   DALLE_LAUNCH=1 (core/distributed/launch-env.ts reads them).
 * - Output: rank 0 inherits the launcher's stdout and stderr untouched (its progress bars draw on the terminal, its
 *   --json lines are the launcher's stdout); every other rank's stdout and stderr go to the launcher's stderr, each line
 *   prefixed `[rank k] ` (they draw no bars: cli/data-parallel.ts). So the launcher's stdout is rank 0's alone.
 * - Signals: the children run in their own process group (detached), so Ctrl-C on a terminal reaches them once,
 *   through the launcher, not twice (the terminal's and the launcher's): a second delivery would make them exit without
 *   a checkpoint (cli/stop-signals.ts). Every SIGINT or SIGTERM the launcher gets is forwarded to every child still
 *   running; the children's own two-signal logic does the rest. If the launcher itself dies of SIGKILL, the children
 *   outlive it; the others' collectives then fail after runtime.dist_timeout_s.
 * - Failure: when a child exits non-zero (or by a signal) and no signal was forwarded, the others get `graceMs` to stop
 *   by themselves (their collectives fail, naming the rank); then SIGTERM; then, `killAfterMs` later, SIGKILL. A signal
 *   forwarded meanwhile cancels that (else our SIGTERM would be the ranks' second signal).
 * - Exit code: the first failing child's (128 + the signal's number for a child killed by a signal); else 128 + the
 *   first signal forwarded, when one was; else 0.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { signalExitCode } from '../stop-signals';
import { copyPrefixedLines } from './line-prefixer';

export interface LaunchPlan {
  readonly nproc: number;
  readonly masterAddr: string;
  readonly masterPort: number;
  /** The script every child runs with this Node (bin/run.js), and its arguments (`train-prior --out RUN ...`). */
  readonly script: string;
  readonly args: readonly string[];
  /** The environment the launch variables are added to. */
  readonly env: NodeJS.ProcessEnv;
  readonly graceMs: number;
  readonly killAfterMs: number;
  /** Where the other ranks' lines go (the launcher's stderr). */
  readonly otherRanksOutput: Writable;
  /** The launcher's own messages ("rank 1 exited with code 7"). */
  readonly notice: (message: string) => void;
}

export interface RankExit {
  readonly rank: number;
  readonly pid?: number;
  /** Exit status, or null when a signal ended it. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Milliseconds from the start to its exit. */
  readonly ms: number;
}

export interface LaunchOutcome {
  readonly exitCode: number;
  /** The first child to fail (non-zero status or a signal), if any did. */
  readonly firstFailure?: RankExit;
  /** The first signal the launcher got and forwarded. */
  readonly stoppedBy?: NodeJS.Signals;
  /** Ranks the launcher sent SIGTERM (after the grace) or SIGKILL (after that) to. */
  readonly terminated: readonly number[];
  readonly killed: readonly number[];
  /** Every child, by rank. */
  readonly ranks: readonly RankExit[];
}

/** The exit status a child's exit stands for: its code, or 128 + the signal's number. */
export function statusOf(exit: Pick<RankExit, 'exitCode' | 'signal'>): number {
  return exit.exitCode ?? signalExitCode(exit.signal ?? 'SIGKILL');
}

/** "exit code 7" or "signal SIGKILL". */
export function describeExit(exit: Pick<RankExit, 'exitCode' | 'signal'>): string {
  return exit.exitCode !== null ? `exit code ${exit.exitCode}` : `signal ${exit.signal}`;
}

export class RankGroup {
  private readonly children: ChildProcess[] = [];
  private readonly exits = new Map<number, RankExit>();
  private readonly terminated: number[] = [];
  private readonly killed: number[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private firstFailure?: RankExit;
  private stoppedBy?: NodeJS.Signals;
  private started = 0;
  private settle?: () => void;
  private readonly killOnExit = (): void => {
    this.sendToRunning('SIGKILL');
  };

  constructor(private readonly plan: LaunchPlan) {}

  /** Starts every rank and resolves when all have exited (and their output is copied). */
  async run(): Promise<LaunchOutcome> {
    this.started = Date.now();
    // Should the launcher end abruptly (an exception), the children do not run on unsupervised.
    process.once('exit', this.killOnExit);
    const copies: Promise<void>[] = [];
    const allExited = new Promise<void>((resolve) => {
      this.settle = resolve;
    });
    try {
      for (let rank = 0; rank < this.plan.nproc; rank++) copies.push(...this.start(rank));
      await allExited;
      await Promise.all(copies);
    } finally {
      for (const timer of this.timers.splice(0)) clearTimeout(timer);
      process.off('exit', this.killOnExit);
    }
    const ranks = [...this.exits.values()].sort((a, b) => a.rank - b.rank);
    const exitCode = this.firstFailure !== undefined ? statusOf(this.firstFailure) : this.stoppedBy !== undefined ? signalExitCode(this.stoppedBy) : 0;
    return { exitCode, firstFailure: this.firstFailure, stoppedBy: this.stoppedBy, terminated: this.terminated, killed: this.killed, ranks };
  }

  /** Forwards a signal the launcher got to every child still running. */
  forward(signal: NodeJS.Signals): void {
    const first = this.stoppedBy === undefined;
    this.stoppedBy ??= signal;
    // The user now decides: a SIGTERM of ours after the grace would be the ranks' second signal (exit at once).
    for (const timer of this.timers.splice(0)) clearTimeout(timer);
    const running = this.sendToRunning(signal);
    this.plan.notice(
      `${signal}${first ? '' : ' again'}: forwarded to rank${running.length === 1 ? '' : 's'} ${running.join(', ') || '(none running)'}` +
        (first ? ' (they finish the update and checkpoint; a second signal makes them exit at once)' : ''),
    );
  }

  private start(rank: number): Promise<void>[] {
    const { plan } = this;
    const env: NodeJS.ProcessEnv = {
      ...plan.env,
      RANK: String(rank),
      WORLD_SIZE: String(plan.nproc),
      LOCAL_RANK: String(rank),
      LOCAL_WORLD_SIZE: String(plan.nproc),
      MASTER_ADDR: plan.masterAddr,
      MASTER_PORT: String(plan.masterPort),
      DALLE_LAUNCH: '1',
    };
    const child = spawn(process.execPath, [plan.script, ...plan.args], {
      env,
      detached: true,
      stdio: rank === 0 ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
    });
    this.children[rank] = child;
    child.once('error', (error) => {
      // spawn failed (no 'exit' follows): count it as a failure of that rank
      if (child.pid === undefined) {
        plan.notice(`rank ${rank} could not start: ${error.message}`);
        this.exited(rank, 127, null);
      }
    });
    child.once('close', (code, signal) => this.exited(rank, code, signal));
    if (rank === 0) return [];
    const prefix = `[rank ${rank}] `;
    return [child.stdout, child.stderr].filter((stream) => stream !== null).map((stream) => copyPrefixedLines(stream, plan.otherRanksOutput, prefix));
  }

  private exited(rank: number, exitCode: number | null, signal: NodeJS.Signals | null): void {
    if (this.exits.has(rank)) return;
    const exit: RankExit = { rank, pid: this.children[rank]?.pid, exitCode, signal, ms: Date.now() - this.started };
    this.exits.set(rank, exit);
    if (statusOf(exit) !== 0 && this.firstFailure === undefined) {
      this.firstFailure = exit;
      // After a forwarded signal the ranks are stopping already (130, 143 expected); a SIGTERM of ours would be their
      // second signal.
      if (this.stoppedBy === undefined) {
        const others = this.running();
        this.plan.notice(`rank ${rank} failed first, with ${describeExit(exit)}${others.length > 0 ? `; waiting ${this.plan.graceMs / 1000} s for the other ranks to stop` : ''}`);
        if (others.length > 0) this.scheduleTermination();
      }
    }
    if (this.exits.size === this.plan.nproc) this.settle?.();
  }

  private scheduleTermination(): void {
    const { graceMs, killAfterMs } = this.plan;
    this.timers.push(
      setTimeout(() => {
        const running = this.sendToRunning('SIGTERM');
        if (running.length === 0) return;
        this.terminated.push(...running);
        this.plan.notice(`rank${running.length === 1 ? '' : 's'} ${running.join(', ')} still running ${graceMs / 1000} s after the failure: SIGTERM`);
        this.timers.push(
          setTimeout(() => {
            const left = this.sendToRunning('SIGKILL');
            if (left.length === 0) return;
            this.killed.push(...left);
            this.plan.notice(`rank${left.length === 1 ? '' : 's'} ${left.join(', ')} still running ${killAfterMs / 1000} s after SIGTERM: SIGKILL`);
          }, killAfterMs),
        );
      }, graceMs),
    );
  }

  private running(): number[] {
    return this.children.map((_, rank) => rank).filter((rank) => !this.exits.has(rank));
  }

  /** Sends `signal` to every child that has not exited; returns their ranks. */
  private sendToRunning(signal: NodeJS.Signals): number[] {
    const running = this.running();
    for (const rank of running) {
      try {
        this.children[rank].kill(signal);
      } catch {
        // it exited meanwhile
      }
    }
    return running;
  }
}
