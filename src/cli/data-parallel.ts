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
