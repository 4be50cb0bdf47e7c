/**
 * The small agreements a data-parallel step needs besides its gradients, each one collective operation:
 * whether to stop (so every rank stops after the same update and checkpoints it), the step's scalars averaged (so
 * rank 0's metrics are the global batch's), and which records of a global batch failed to decode (so every rank
 * passes over the same ones: data/loader.ts LoaderPart).
 */
import { LoaderPart } from '../data/loader';
import { Collective } from './collective';

/**
 * Whether to stop, the same on every rank: each rank says 0 (go on) or the exit code its stop asks for (a signal's:
 * 130, 143); every rank gets the largest, so all stop after the same update when any rank was signalled (signals reach
 * ranks at different updates, or only some of them), and all exit alike.
 */
export async function agreeToStop(collective: Collective, exitCodeHere: number): Promise<number> {
  if (collective.worldSize === 1) return exitCodeHere;
  const code = new Float64Array([exitCodeHere]);
  await collective.allReduce(code, 'max');
  return code[0];
}

/** The mean over ranks of each value (each rank's value is the mean over its equal part of the batch). */
export async function meanOfScalars(collective: Collective, values: readonly number[]): Promise<number[]> {
  if (collective.worldSize === 1) return [...values];
  const data = Float64Array.from(values);
  await collective.allReduce(data, 'sum');
  return [...data].map((v) => v / collective.worldSize);
}

/** This rank's part of each global batch of `batchSize` records, the ranks agreeing on the records that fail. */
export function loaderPart(collective: Collective, batchSize: number): LoaderPart {
  const { rank, worldSize } = collective;
  if (worldSize === 1) return { index: 0, count: 1 };
  const perRank = batchSize / worldSize;
  return {
    index: rank,
    count: worldSize,
    // A slot per record of the global batch (a part fails at most its own records): -1, or the failed record's
    // index in this rank's slots; the max over ranks is every rank's failures.
    agreeOnFailures: async (failedHere) => {
      if (failedHere.length > perRank) throw new Error(`dalle: ${failedHere.length} failures reported in a part of ${perRank} records`);
      const slots = new Float64Array(batchSize).fill(-1);
      failedHere.forEach((index, i) => (slots[rank * perRank + i] = index));
      await collective.allReduce(slots, 'max');
      return [...slots].filter((v) => v >= 0);
    },
  };
}

/** Rank 0's bytes on every rank (`bytes` is read on rank 0 only): what one rank decides and the others must use. */
export async function shareFromRankZero(collective: Collective, bytes: Uint8Array | undefined): Promise<Uint8Array> {
  if (collective.worldSize === 1) {
    if (!bytes) throw new Error('dalle: shareFromRankZero: rank 0 has nothing to share');
    return bytes;
  }
  if (collective.rank === 0 && !bytes) throw new Error('dalle: shareFromRankZero: rank 0 has nothing to share');
  const length = new Float64Array([collective.rank === 0 ? (bytes as Uint8Array).length : 0]);
  await collective.allReduce(length, 'max');
  const data = collective.rank === 0 ? Uint8Array.from(bytes as Uint8Array) : new Uint8Array(length[0]);
  await collective.broadcast(data, 0);
  return data;
}
