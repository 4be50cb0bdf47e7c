/**
 * What a trainer needs to run as one rank of a data-parallel run, from the launch environment (launch-env.ts) and
 * the run's config: the collective (every rank joined), the device of this rank (cuda -> cuda:LOCAL_RANK), and how the
 * gradients become the mean over ranks (train.grad_compression: exact buckets, or PowerSGD).
 */
import { Tensor } from '../tensor';
import { BucketedAllReduce } from './bucketed-all-reduce';
import { Collective } from './collective';
import { GradientSync, NoGradientSync } from './gradient-sync';
import { LaunchEnv } from './launch-env';
import { openCollective } from './open';
import { PowerSgd } from './powersgd';

export interface TrainingGroupOptions {
  readonly launch: LaunchEnv;
  /** runtime.device. */
  readonly device: string;
  /** runtime.dist_timeout_s. */
  readonly timeoutS: number;
  /** train.grad_compression, train.powersgd_rank, train.bucket_mb (trainers without them: exact, 25 MB). */
  readonly compression?: 'none' | 'powersgd';
  readonly powersgdRank?: number;
  readonly bucketMb?: number;
  /** runtime.seed: PowerSGD's starting Q, the same on every rank. */
  readonly seed: number;
}

export interface TrainingGroup {
  readonly collective: Collective;
  /** The device this rank trains on: runtime.device, with a bare `cuda` made `cuda:LOCAL_RANK` on several ranks. */
  readonly device: string;
  readonly gradientSync: (params: readonly Tensor[]) => GradientSync;
  close(): void;
}

/** The device of a rank: several ranks on one machine take a GPU each (cuda -> cuda:LOCAL_RANK); cpu stays cpu. */
export function rankDevice(device: string, launch: LaunchEnv): string {
  return device === 'cuda' && launch.worldSize > 1 ? `cuda:${launch.localRank}` : device;
}

export async function openTrainingGroup(options: TrainingGroupOptions): Promise<TrainingGroup> {
  const { launch } = options;
  const device = rankDevice(options.device, launch);
  const collective = await openCollective({
    rank: launch.rank,
    worldSize: launch.worldSize,
    localRank: launch.localRank,
    masterAddr: launch.masterAddr,
    masterPort: launch.masterPort,
    timeoutMs: options.timeoutS * 1000,
    device,
    launched: launch.source !== 'single',
  });
  const gradientSync = (params: readonly Tensor[]): GradientSync => {
    if (options.compression === 'powersgd') return new PowerSgdSync(params, collective, options.powersgdRank ?? 4, options.seed);
    if (collective.backend === 'single') return new NoGradientSync();
    return new BucketedAllReduce(params, collective, (options.bucketMb ?? 25) * 2 ** 20);
  };
  return { collective, device, gradientSync, close: () => collective.close() };
}

/**
 * PowerSGD as the loop's gradient sync: after backward (it needs every gradient, so nothing overlaps), the mean over
 * ranks of each gradient's rank-r approximation with error feedback (powersgd.ts). It runs in one process too, where
 * it changes the update by the approximation only (to see what compression costs in loss before paying for ranks).
 */
export class PowerSgdSync implements GradientSync {
  private readonly compressor: PowerSgd;
  private last?: { allreduce_bytes: number; allreduce_bytes_uncompressed: number };

  constructor(params: readonly Tensor[], collective: Collective, rank: number, seed: number) {
    // Names only identify the compressor's state per parameter; the loop's order is the same on every rank.
    this.compressor = new PowerSgd(params.map((p, i) => [`p${i}`, p] as const), { rank, collective, seed });
  }

  async finish(): Promise<void> {
    const report = await this.compressor.reduce();
    this.last = { allreduce_bytes: report.allreduceBytes, allreduce_bytes_uncompressed: report.allreduceBytesUncompressed };
  }

  metrics(): Record<string, number> {
    return this.last ? { ...this.last } : {};
  }

  dispose(): void {
    this.compressor.dispose();
  }
}
