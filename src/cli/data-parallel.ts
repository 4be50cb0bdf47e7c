/**
 * The commands that can run as one rank of a data-parallel run (`dalle launch` starts only these), and what a rank
 * draws: rank 0 draws the progress; the other ranks show only warnings (their errors are thrown, and printed, as
 * usual), so N processes writing to one terminal or log do not draw N sets of bars.
 */
import { resolveLaunch } from '../core/distributed/launch-env';

export const DATA_PARALLEL_COMMANDS: readonly string[] = ['train-dvae', 'train-prior', 'train-clip'];

/**
 * Whether command `commandId` runs here as a rank other than 0. Throws LaunchEnvError (exit 3) for a trainer whose
 * launch variables are partial or inconsistent (core/distributed/launch-env.ts); other commands never read them.
 */
export function isSecondaryRank(commandId: string | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  if (commandId === undefined || !DATA_PARALLEL_COMMANDS.includes(commandId)) return false;
  return resolveLaunch(env).rank > 0;
}

/** The config fields a trainer's rank group reads (runtime.*, and train.* where the trainer has them). */
interface GroupConfig {
  readonly runtime: { readonly device: string; readonly dist_timeout_s: number; readonly seed: number };
  readonly train?: { readonly grad_compression?: 'none' | 'powersgd'; readonly powersgd_rank?: number; readonly bucket_mb?: number };
}

/**
 * This process's place in a data-parallel run (the launch variables: launch-env.ts), joined: resolves once every
 * rank has (one process: at once, with nothing to join). `device` is the rank's (cuda -> cuda:LOCAL_RANK).
 */
export async function joinTrainingGroup(config: GroupConfig): Promise<import('../core/distributed/training-group').TrainingGroup> {
  const { openTrainingGroup } = await import('../core/distributed/training-group');
  return openTrainingGroup({
    launch: resolveLaunch(),
    device: config.runtime.device,
    timeoutS: config.runtime.dist_timeout_s,
    compression: config.train?.grad_compression,
    powersgdRank: config.train?.powersgd_rank,
    bucketMb: config.train?.bucket_mb,
    seed: config.runtime.seed,
  });
}
