import * as fs from 'node:fs';
import * as path from 'node:path';
import { Errors, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, NO_CONFIG } from '../cli/config-use';
import { DATA_PARALLEL_COMMANDS } from '../cli/data-parallel';
import { findFreePort } from '../cli/launch/free-port';
import { describeExit, LaunchOutcome, RankExit, RankGroup } from '../cli/launch/rank-group';
import { STOP_SIGNALS } from '../cli/stop-signals';
import { LaunchEnvError, resolveLaunch } from '../core/distributed/launch-env';

/** Test-only: a script the children run instead of the CLI (test/commands/launch.test.ts); documented, never needed. */
const TEST_CHILD_VAR = 'DALLE_LAUNCH_TEST_CHILD';
const MAX_NPROC = 256;
const MAX_WAIT_S = 3600;

/** A number of seconds in 0..MAX_WAIT_S (a usage error, exit 2, otherwise). */
const seconds = Flags.custom<number>({
  helpValue: 'S',
  parse: async (input) => {
    const value = Number(input);
    if (input.trim() === '' || !Number.isFinite(value) || value < 0 || value > MAX_WAIT_S) {
      throw new Errors.CLIError(`expected a number of seconds in 0..${MAX_WAIT_S}, got '${input}'`, { exit: 2 });
    }
    return value;
  },
});

export interface LaunchSummary {
  readonly nproc: number;
  readonly command: readonly string[];
  readonly masterAddr: string;
  readonly masterPort: number;
  readonly exitCode: number;
  readonly firstFailure?: RankExit;
  readonly stoppedBy?: string;
  readonly terminated: readonly number[];
  readonly killed: readonly number[];
  readonly ranks: readonly RankExit[];
}

export default class LaunchCommand extends BaseCommand<typeof LaunchCommand> {
  static override summary = 'Run a trainer as N data-parallel processes on this machine (RANK, WORLD_SIZE, MASTER_ADDR, ... set for each).';

  static override description = [
    'Starts N processes of `dalle COMMAND ARGS` (COMMAND: train-dvae, train-prior or train-clip), each with RANK and ' +
      'LOCAL_RANK (0..N-1), WORLD_SIZE and LOCAL_WORLD_SIZE (N), MASTER_ADDR and MASTER_PORT (a free port unless ' +
      '--master-port is given) and DALLE_LAUNCH=1. On a cluster, start the trainer with `srun` (Slurm) or as a ' +
      'Kubernetes Indexed Job instead: see examples/slurm and examples/kubernetes.',
    "Output: rank 0's stdout and stderr pass through untouched (its progress bars, its --json lines); the other ranks " +
      "draw no progress, and their lines go to stderr prefixed '[rank K] '. So with `-- train-prior --json ...` stdout " +
      "holds rank 0's JSON lines only; `dalle launch --json` adds a summary (exit code, first failure, each rank's " +
      'status) as the last line.',
    'Ctrl-C or SIGTERM is forwarded to every rank (which finishes its update, checkpoints and exits 130 or 143); a ' +
      'second signal is forwarded too, and the ranks exit at once. When a rank fails, the others get --grace seconds to ' +
      'stop by themselves, then SIGTERM, then SIGKILL --kill-after seconds later. The exit code is the first failing ' +
      "rank's (128 + the signal for a rank killed by one), or 128 + the signal the launcher got, or 0 when every rank " +
      'succeeded.',
    'On CPU every rank uses all cores unless told otherwise: give each its share, e.g. `DALLE_THREADS=4 dalle launch ' +
      '--nproc 4 ...` on 16 cores. (Tests only: DALLE_LAUNCH_TEST_CHILD=script.js makes the children run that script ' +
      'instead of the CLI.)',
  ].join('\n\n');

  static override examples = [
    {
      description: 'Train the emoji prior on 4 processes of this machine.',
      command: '<%= config.bin %> <%= command.id %> --nproc 4 -- train-prior --config configs/prior-emoji.yaml --data data/emoji --dvae runs/dvae-emoji --out runs/prior-emoji',
    },
    {
      description: 'Two processes of 4 CPU threads each, with a summary line for scripts; the run continues from its checkpoint.',
      command: 'DALLE_THREADS=4 <%= config.bin %> <%= command.id %> --nproc 2 --json -- train-prior --out runs/prior-emoji --resume',
    },
  ];

  static override strict = false;

  static override flags = {
    nproc: Flags.integer({ summary: `Processes to start, 1..${MAX_NPROC}.`, required: true, min: 1, max: MAX_NPROC, helpValue: 'N' }),
    'master-addr': Flags.string({ summary: 'Address rank 0 listens on for the rendezvous (an address of this machine).', default: '127.0.0.1', helpValue: 'ADDR' }),
    'master-port': Flags.integer({ summary: 'Port of the rendezvous; default: a free port.', min: 1, max: 65_535, helpValue: 'PORT' }),
    grace: seconds({ summary: 'Seconds the other ranks get to stop by themselves after one fails, before SIGTERM.', default: 30 }),
    'kill-after': seconds({ summary: 'Seconds after that SIGTERM before SIGKILL.', default: 10 }),
  };

  static override configUse: ConfigUse = NO_CONFIG;

  async run(): Promise<LaunchSummary> {
    const { nproc, grace } = this.flags;
    const command = await this.commandAfterDashes();
    this.refuseNestedLaunch();
    const script = this.childScript();
    const masterAddr = this.flags['master-addr'];
    const masterPort = this.flags['master-port'] ?? (await this.freePort(masterAddr));
    const env = { ...process.env };
    delete env[TEST_CHILD_VAR];
    const notice = (message: string): void => {
      process.stderr.write(`[launch] ${message}\n`);
    };
    notice(`starting ${nproc} rank${nproc === 1 ? '' : 's'} of ${this.config.bin} ${command.join(' ')}; rendezvous at ${masterAddr}:${masterPort}`);
    const group = new RankGroup({
      nproc,
      masterAddr,
      masterPort,
      script,
      args: command,
      env,
      graceMs: grace * 1000,
      killAfterMs: this.flags['kill-after'] * 1000,
      otherRanksOutput: process.stderr,
      notice,
    });
    const listeners = STOP_SIGNALS.map((signal) => [signal, (): void => group.forward(signal)] as const);
    // Ours as well as the base command's: with a second listener it leaves the signal to us (cli/stop-signals.ts).
    for (const [signal, listener] of listeners) process.on(signal, listener);
    let outcome: LaunchOutcome;
    try {
      outcome = await group.run();
    } finally {
      for (const [signal, listener] of listeners) process.off(signal, listener);
    }
    notice(this.describeOutcome(outcome));
    process.exitCode = outcome.exitCode;
    return { nproc, command, masterAddr, masterPort, ...outcome };
  }

  /** The arguments after the first `--`: a trainer and its arguments. */
  private async commandAfterDashes(): Promise<string[]> {
    const dashes = this.argv.indexOf('--');
    const usage = `usage: ${this.config.bin} launch --nproc N -- COMMAND [ARGS], COMMAND one of ${DATA_PARALLEL_COMMANDS.join(', ')}`;
    if (dashes === -1) {
      const stray = this.argv.find((arg) => DATA_PARALLEL_COMMANDS.includes(arg));
      this.error(stray !== undefined ? `put -- before the command: ${this.config.bin} launch ... -- ${stray} ...` : 'no command to launch: give it after --', { exit: 2, suggestions: [usage] });
    }
    const command = this.argv.slice(dashes + 1);
    const stray = await this.argumentsBeforeDashes(command);
    if (stray.length > 0) this.error(`unexpected argument${stray.length === 1 ? '' : 's'} before --: ${stray.join(' ')}`, { exit: 2, suggestions: [usage] });
    const [name] = command;
    if (name === undefined) this.error('no command after --', { exit: 2, suggestions: [usage] });
    if (name === 'launch') this.error('`launch` cannot start `launch`: give the trainer itself after --', { exit: 2, suggestions: [usage] });
    if (!DATA_PARALLEL_COMMANDS.includes(name)) {
      this.error(`${this.config.bin} launch starts trainers only, not \`${name}\``, { exit: 2, suggestions: [usage] });
    }
    return command;
  }

  /**
   * What oclif took for arguments (not flags) before `--`: its parse (not strict, so that the command after `--` is
   * allowed) returns them with the arguments after `--`, which are removed here one for one.
   */
  private async argumentsBeforeDashes(command: readonly string[]): Promise<string[]> {
    const { argv } = await this.parse({ flags: LaunchCommand.flags, baseFlags: LaunchCommand.baseFlags, enableJsonFlag: true, strict: false, args: {} });
    const after = [...command];
    return (argv as string[]).filter((arg) => {
      const i = after.indexOf(arg);
      if (i === -1) return true;
      after.splice(i, 1);
      return false;
    });
  }

  /** This launcher is itself one of several processes (srun with several tasks, a pod of an Indexed Job, ...). */
  private refuseNestedLaunch(): void {
    const launch = resolveLaunch(process.env);
    if (launch.worldSize === 1) return;
    throw new LaunchEnvError(
      `\`${this.config.bin} launch\` starts every process on this machine, but this process is already rank ${launch.rank} of ${launch.worldSize} (${launch.source}: ${launch.origin})`,
      'start the trainer itself in each task (`srun dalle train-prior ...`, or the pod\'s command), or run the launcher as a single task (`srun --ntasks=1 dalle launch ...`)',
    );
  }

  /** bin/run.js of this installation, or the test-only script of DALLE_LAUNCH_TEST_CHILD. */
  private childScript(): string {
    const testChild = process.env[TEST_CHILD_VAR];
    if (testChild === undefined || testChild === '') return path.join(this.config.root, 'bin', 'run.js');
    if (!path.isAbsolute(testChild) || !fs.statSync(testChild, { throwIfNoEntry: false })?.isFile()) {
      this.error(`${TEST_CHILD_VAR}=${testChild} is not an absolute path to a file (it is for dalle's own tests)`, { exit: 2, suggestions: [`unset ${TEST_CHILD_VAR}`] });
    }
    return testChild;
  }

  private async freePort(host: string): Promise<number> {
    try {
      return await findFreePort(host);
    } catch (error) {
      this.error(`--master-addr ${host}: cannot listen there (${(error as Error).message})`, {
        exit: 2,
        suggestions: ['give an address of this machine (127.0.0.1 for ranks on this machine only)'],
      });
    }
  }

  private describeOutcome(outcome: LaunchOutcome): string {
    const { firstFailure, stoppedBy, exitCode } = outcome;
    if (stoppedBy !== undefined) {
      const first = firstFailure !== undefined ? `rank ${firstFailure.rank} exited first, with ${describeExit(firstFailure)}` : 'every rank exited 0';
      return `stopped by ${stoppedBy}: ${first}; exit code ${exitCode}`;
    }
    if (firstFailure !== undefined) return `rank ${firstFailure.rank} failed first (${describeExit(firstFailure)}); exit code ${exitCode}`;
    return outcome.ranks.length === 1 ? 'the rank succeeded' : `all ${outcome.ranks.length} ranks succeeded`;
  }
}
