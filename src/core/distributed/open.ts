/**
 * Picks the Collective for a process: one process needs none (SingleProcess); CPU ranks use Gloo (gloo.ts); CUDA
 * ranks use NCCL (nccl.ts), loaded at run time by the CUDA addon. `availableCollectives` says which backends this
 * build has, for `dalle info`.
 */
import { cudaIndex, Device, InvalidDeviceError, parseDevice } from '../backend/device';
import { Collective, CollectiveBackendName, CollectiveError, RankPlacement, SingleProcess } from './collective';
import { GlooCollective, glooStatus } from './gloo';
import { NCCL_UNAVAILABLE_HINT, NcclCollective, ncclStatus } from './nccl';

export interface OpenCollectiveOptions extends RankPlacement {
  /** runtime.device: 'cpu', 'cuda' or 'cuda:N'. */
  device: string;
  /** Started by a launcher (dalle launch, srun, torchrun variables): the library is used even for one rank. */
  launched?: boolean;
}

function usage(message: string, hint: string): CollectiveError {
  return new CollectiveError(`dalle: ${message}`, hint, undefined, 'usage');
}

/** The collective of this process; with more than one rank, resolves once every rank has joined. */
export async function openCollective(options: OpenCollectiveOptions): Promise<Collective> {
  const { rank, worldSize, localRank, masterAddr, masterPort, timeoutMs } = options;
  const launchHint = 'the launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (see `dalle launch --help`)';
  if (!Number.isInteger(worldSize) || worldSize < 1) throw usage(`world size ${worldSize} is not a positive integer`, launchHint);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw usage(`rank ${rank} is not one of 0 .. ${worldSize - 1}`, launchHint);
  if (!Number.isInteger(localRank) || localRank < 0) throw usage(`local rank ${localRank} is not a non-negative integer`, launchHint);
  let device: Device;
  try {
    device = parseDevice(options.device);
  } catch (err) {
    if (err instanceof InvalidDeviceError) throw usage(err.message.replace(/^dalle: /, ''), 'runtime.device is cpu, cuda or cuda:N');
    throw err;
  }
  // One rank started by a launcher still goes through its library (a check of the data-parallel path on one device:
  // `dalle launch --nproc 1 -- train-prior --device cuda` runs NCCL); one process on its own needs none.
  if (worldSize === 1 && !options.launched) return new SingleProcess();
  if (typeof masterAddr !== 'string' || masterAddr.length === 0) throw usage('MASTER_ADDR is empty', launchHint);
  if (!Number.isInteger(masterPort) || masterPort < 1 || masterPort > 65535) throw usage(`MASTER_PORT ${masterPort} is not a port (1 .. 65535)`, launchHint);
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) throw usage(`the timeout ${timeoutMs} ms is not positive`, 'set runtime.dist_timeout_s > 0');
  if (device !== 'cpu') {
    const nccl = ncclStatus();
    if (!nccl.available) {
      throw new CollectiveError(
        `dalle: data-parallel training on ${device} needs NCCL: ${nccl.reason}`,
        NCCL_UNAVAILABLE_HINT,
        undefined,
        'unavailable',
      );
    }
    // NCCL_SOCKET_IFNAME (read by NCCL itself) picks the interface on a machine with several.
    return NcclCollective.open({
      rank, worldSize, localRank, masterAddr, masterPort, timeoutMs: Math.round(timeoutMs), device: cudaIndex(device) ?? 0,
    });
  }
  // GLOO_SOCKET_IFNAME (as PyTorch reads it): the interface for Gloo's connections on a machine with several.
  const iface = process.env.GLOO_SOCKET_IFNAME || undefined;
  return GlooCollective.open({ rank, worldSize, localRank, masterAddr, masterPort, timeoutMs: Math.round(timeoutMs), iface });
}

export interface CollectiveBackendStatus {
  backend: CollectiveBackendName;
  /** Usable in this process. */
  available: boolean;
  /** What it carries, or why it is not available. */
  detail: string;
}

/** Every backend of Collective, whether this build can use it, and why not. */
export function availableCollectives(): CollectiveBackendStatus[] {
  const gloo = glooStatus();
  const nccl = ncclStatus();
  return [
    { backend: 'single', available: true, detail: 'one process' },
    {
      backend: 'gloo',
      available: gloo.available,
      detail: gloo.available ? `Gloo ${gloo.glooVersion ?? '?'} over TCP, CPU ranks` : gloo.reason,
    },
    {
      backend: 'nccl',
      available: nccl.available,
      detail: nccl.available ? `NCCL ${nccl.version ?? '?'} (${nccl.library}), CUDA ranks` : nccl.reason,
    },
  ];
}
