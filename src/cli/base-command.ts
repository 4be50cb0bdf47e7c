/**
 * The base of every dalle command (not itself a command: it lives outside src/commands so oclif does not list it).
 * It owns the shared flags, resolves the config (defaults < --config FILE < --set < runtime flags), draws core events
 * (bars, or JSON lines under --json), and turns named core errors into exit codes with suggestions.
 */
import { Command, Interfaces, ux } from '@oclif/core';
import { ConfigOf, ConfigSchema, Override, parseSetArgument, resolveConfig } from '../core/config';
import { EventSink, EventSource } from '../core/events';
import { RunLock, acquireRunLock } from '../core/io/run-lock';
import { checkConfigUse, ConfigUse, NO_CONFIG } from './config-use';
import { isSecondaryRank } from './data-parallel';
import { decorateKnownError, exitCodeOf } from './exit-codes';
import { RUNTIME_FLAG_KEYS, sharedFlags } from './flags';
import { createRenderer } from './render';
import { StopHints, StopSignals, StoppableJob, signalExitCode } from './stop-signals';

export type { StopHints, StoppableJob } from './stop-signals';

/** Exit code of a job stopped by Ctrl-C after it saved its work (128 + SIGINT, as shells report it). */
export const INTERRUPTED_EXIT = 130;

export type CommandFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof BaseCommand)['baseFlags'] & T['flags']
>;
export type CommandArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>;
type SharedFlags = Interfaces.InferredFlags<typeof sharedFlags>;
/** An override, marked when it came from an environment variable (DALLE_THREADS) rather than the command line. */
type CommandLineOverride = Override & { readonly fromEnvironment?: boolean };

export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true;
  static override baseFlags = sharedFlags;
  /** The config keys the command reads (every command declares its own); --set outside them is refused. */
  static configUse: ConfigUse = NO_CONFIG;

  protected flags!: CommandFlags<T>;
  protected args!: CommandArgs<T>;
  /** SIGINT and SIGTERM while the command runs (stop-signals.ts). */
  private readonly signals = new StopSignals();
  /** Locks of the folders the command writes, released when it ends (lockFolder). */
  private readonly locks: RunLock[] = [];
  /** Stop drawing events: unsubscribe and close each renderer. */
  private readonly closers: (() => void)[] = [];

  public override async init(): Promise<void> {
    this.signals.install();
    await super.init();
    const { args, flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    });
    this.flags = flags as CommandFlags<T>;
    this.args = args as CommandArgs<T>;
    // Before any work: a --set or runtime flag that this command would not read is an error, not a no-op.
    checkConfigUse(`${this.config.bin} ${this.id?.replaceAll(':', ' ') ?? ''}`.trim(), this.configUse(), {
      file: this.sharedFlags.config,
      overrides: this.configOverrides().filter((override) => !override.fromEnvironment),
    });
  }

  /** The config keys this run reads: the command's `configUse` (a command whose keys depend on flags overrides it). */
  protected configUse(): ConfigUse {
    return (this.constructor as typeof BaseCommand).configUse;
  }

  /** The config of `schema`: its defaults, then --config FILE, then every --set, then --seed/--device/... */
  protected loadConfig<C extends ConfigSchema>(schema: C): ConfigOf<C> {
    return resolveConfig(schema, { file: this.sharedFlags.config, sets: this.configOverrides() });
  }

  /**
   * --set arguments in order, then the runtime flags that were given, each labelled with its argument for errors
   * (a flag set by its environment variable, DALLE_THREADS, is marked: a command that does not read it ignores it).
   */
  protected configOverrides(): CommandLineOverride[] {
    const flags = this.sharedFlags;
    const overrides: CommandLineOverride[] = (flags.set ?? []).map(parseSetArgument);
    for (const [flag, keyPath] of Object.entries(RUNTIME_FLAG_KEYS) as [keyof typeof RUNTIME_FLAG_KEYS, string][]) {
      const value = flags[flag];
      if (value === undefined) continue;
      const fromEnvironment = !this.flagOnCommandLine(flag);
      overrides.push({ keyPath, text: String(value), argument: this.describeFlagSource(flag, value), fromEnvironment });
    }
    return overrides;
  }

  /**
   * Draws the events of `source` until the command ends: progress bars on a terminal, plain lines in a log, or one
   * JSON line per event under --json; only warnings on a data-parallel rank other than 0 (data-parallel.ts). Returns
   * `source`, so `const events = this.renderEvents(new CoreEmitter())`.
   */
  protected renderEvents<E extends EventSource>(source: E): E {
    const warningsOnly = isSecondaryRank(this.id);
    const renderer = createRenderer({ json: this.jsonEnabled(), writeJsonLine: (line) => ux.stdout(line), warningsOnly });
    const unsubscribe = source.on((event) => renderer.handle(event));
    this.closers.push(() => {
      unsubscribe();
      renderer.close();
    });
    return source;
  }

  /**
   * Runs `job` with SIGINT and SIGTERM wired to it: the first asks it to finish the current update and checkpoint
   * (then exit with `interruptedExitCode`); a second exits at once (checkpoints are atomic, so the newest complete one
   * stays usable), printing how to go on from `hints`.
   */
  protected async runStoppable<R>(job: StoppableJob<R>, events: EventSink, hints: StopHints): Promise<R> {
    return this.signals.run(job, events, hints);
  }

  /** The exit code of a job that a signal stopped: 128 + that signal's number (Ctrl-C 130, SIGTERM 143). */
  protected get interruptedExitCode(): number {
    return signalExitCode(this.signals.stoppedBy ?? 'SIGINT');
  }

  /**
   * Takes the lock of a folder this command writes (core/io/run-lock.ts) until the command ends: another command
   * writing the same folder meanwhile is refused (RunLockError, exit code 4). `file` names a lock of its own (a shard's).
   */
  protected lockFolder(dir: string, events?: EventSink, file?: string): void {
    const warnings: EventSink = events ?? { emit: (event) => event.type === 'log' && this.warn(event.message) };
    const command = `${this.config.bin} ${this.id?.replaceAll(':', ' ') ?? ''}`.trim();
    this.locks.push(acquireRunLock(dir, { command, events: warnings, file }));
  }

  // JSON output is JSON Lines: events, then the result (or `{"error": ...}`) as the last line, one object per line.
  protected override logJson(json: unknown): void {
    ux.stdout(JSON.stringify(json));
  }

  // oclif's parse errors carry the whole parse context (every command's flags and the package.json: over 100 KB on one
  // line); a script needs what went wrong and the exit code, so those fields are left out.
  protected override toErrorJson(error: unknown): unknown {
    if (!(error instanceof Error)) return { error: { message: String(error) } };
    const { parse: _parse, args: _args, showHelp: _showHelp, ...fields } = error as Error & Record<string, unknown>;
    return { error: { ...fields, name: error.name, message: error.message } };
  }

  protected override async catch(error: Interfaces.CommandError): Promise<unknown> {
    this.stopRendering(); // stop the bars before the error is printed under them
    const decorated = decorateKnownError(error) as Interfaces.CommandError;
    // Under --json oclif prints the error as JSON and does not throw, so the exit code must be set here.
    if (this.jsonEnabled()) process.exitCode = exitCodeOf(decorated);
    return super.catch(decorated);
  }

  protected override async finally(error: Error | undefined): Promise<unknown> {
    for (const lock of this.locks.splice(0)) lock.release();
    this.signals.uninstall();
    this.stopRendering();
    return super.finally(error);
  }

  private stopRendering(): void {
    for (const close of this.closers.splice(0)) close();
  }

  private get sharedFlags(): SharedFlags {
    return this.flags as unknown as SharedFlags;
  }

  // `--threads 4` or, when it came from the environment, `DALLE_THREADS=4`.
  private describeFlagSource(flag: keyof typeof RUNTIME_FLAG_KEYS, value: unknown): string {
    const env = flag === 'threads' ? sharedFlags.threads.env : undefined;
    return !this.flagOnCommandLine(flag) && env !== undefined ? `${env}=${String(value)}` : `--${flag} ${String(value)}`;
  }

  // Before a `--` only: what follows it is another command's (dalle launch -- train-prior --threads 2).
  private flagOnCommandLine(flag: keyof typeof RUNTIME_FLAG_KEYS): boolean {
    const dashes = this.argv.indexOf('--');
    return (dashes === -1 ? this.argv : this.argv.slice(0, dashes)).some((arg) => arg === `--${flag}` || arg.startsWith(`--${flag}=`));
  }
}
