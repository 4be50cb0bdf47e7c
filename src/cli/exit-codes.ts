/**
 * Named errors -> exit codes and suggestions. Core modules throw their own named errors (ConfigError, ...); the CLI
 * looks them up here by `error.name`, so the core never imports the CLI. Adding a named error is one line in POLICIES.
 */
import { ConfigError } from '../core/config';
import type { DataError } from '../core/data/errors';
import type { LaunchEnvError } from '../core/distributed/launch-env';
import type { TokenFileError } from '../core/image/dvae-codec';
import type { TextFileError } from '../core/io/errors';
import type { OutputPathError, OutputWriteError } from '../core/io/write-errors';
import type { TokenizerError } from '../core/text/errors';
import type { CheckpointError } from '../core/checkpoint';

/** Exit codes that scripts can rely on. oclif itself uses 2 for flag-parsing errors. */
export const ExitCode = {
  /** An unexpected failure (a bug: please report it with the stack from DEBUG=*). */
  failure: 1,
  /** Bad flags or arguments (oclif's parser). */
  usage: 2,
  /** A config problem: unknown key, wrong type, out of range, malformed YAML. */
  config: 3,
  /** A missing or unreadable input: data set, checkpoint, run directory (or one that another command is writing). */
  input: 4,
  /** The job failed while running: out of memory, no CUDA device, non-finite loss. */
  runtime: 5,
} as const;

interface ErrorPolicy {
  readonly exit: number;
  readonly suggestions: (error: Error) => readonly (string | undefined)[];
}

const POLICIES: Readonly<Record<string, ErrorPolicy>> = {
  ConfigError: {
    exit: ExitCode.config,
    suggestions: (error) => [(error as ConfigError).hint],
  },
  DataError: { exit: ExitCode.input, suggestions: (error) => [(error as DataError).hint] },
  CheckpointError: { exit: ExitCode.input, suggestions: (error) => [(error as CheckpointError).hint] },
  TokenFileError: { exit: ExitCode.input, suggestions: (error) => [(error as TokenFileError).hint] },
  OnnxModelError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  OnnxRuntimeUnavailableError: { exit: ExitCode.runtime, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  TokenizerError: { exit: ExitCode.input, suggestions: (error) => [(error as TokenizerError).hint] },
  // a user's text file (captions, manifest, tokenizer, run metadata) too large, with too long a line, or not UTF-8
  TextFileError: { exit: ExitCode.input, suggestions: (error) => [(error as TextFileError).hint] },
  // dalle generate (src/core/sample): bad sampling or shard flags are usage errors; captions and output folders, input.
  SamplingError: { exit: ExitCode.usage, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  ShardError: { exit: ExitCode.usage, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  CaptionError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  OutputDirError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  RerankError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  // An output path that cannot be written (src/core/io/write-errors.ts): a bad path is input; a full disk, runtime.
  OutputPathError: { exit: ExitCode.input, suggestions: (error) => [(error as OutputPathError).hint] },
  OutputWriteError: { exit: ExitCode.runtime, suggestions: (error) => [(error as OutputWriteError).hint] },
  // dalle convert openai-dvae (src/core/io/pickle.ts, torch-file.ts, models/dvae/openai-release.ts): a pickle that
  // asks to run anything, a file that is not a readable torch.save file, modules that are not the released dVAE's.
  PickleRefusedError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  PickleFormatError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  TorchFileError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  OpenAiDvaeError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  // A folder that another dalle command is writing (core/io/run-lock.ts): the message names the holder.
  RunLockError: { exit: ExitCode.input, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  // A data-parallel process's launch variables (RANK, WORLD_SIZE, SLURM_*, JOB_COMPLETION_INDEX, MASTER_*) are partial
  // or inconsistent (core/distributed/launch-env.ts): configuration, like a bad config key.
  LaunchEnvError: { exit: ExitCode.config, suggestions: (error) => [(error as LaunchEnvError).hint] },
  // A data-parallel collective operation that could not complete (core/distributed/gloo.ts): the message names the
  // rank at fault when it is known (exited, stopped answering, never joined), the hint what to do about it.
  CollectiveError: { exit: ExitCode.runtime, suggestions: (error) => [(error as Error & { hint?: string }).hint] },
  DeviceUnavailableError: {
    exit: ExitCode.runtime,
    suggestions: () => ['run on the CPU with --device cpu (or set runtime.device: cpu in the config)'],
  },
};

/** Error fields that oclif's error printer and exit handling read. */
interface OclifErrorFields {
  oclif?: { exit?: number };
  suggestions?: string[];
}

/**
 * Adds oclif's exit code and suggestions to a known named error, so oclif prints
 * "ConfigError: <message>" with "Try this: <suggestions>" and exits with the error's code. Other errors pass unchanged.
 */
export function decorateKnownError(error: unknown): unknown {
  if (!(error instanceof Error) || !Object.hasOwn(POLICIES, error.name)) return error;
  const policy = POLICIES[error.name];
  const fields = error as Error & OclifErrorFields;
  fields.oclif = { ...fields.oclif, exit: policy.exit };
  fields.suggestions = policy.suggestions(error).filter((text): text is string => text !== undefined);
  return error;
}

/** The exit code oclif will use for this error. */
export function exitCodeOf(error: unknown): number {
  return (error as OclifErrorFields | undefined)?.oclif?.exit ?? ExitCode.failure;
}
