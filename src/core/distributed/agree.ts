/**
 * The small agreements a data-parallel step needs besides its gradients, each one collective operation:
 * whether to stop (so every rank stops after the same update and checkpoints it), the step's scalars averaged (so
 * rank 0's metrics are the global batch's), and which records of a global batch failed to decode (so every rank
 * passes over the same ones: data/loader.ts LoaderPart).
 */
import { LoaderPart } from '../data/loader';
import { Collective } from './collective';

/** True on every rank when any rank asked to stop (a signal reaches the ranks at different updates, or only one). */
export async function agreeToStop(collective: Collective, requestedHere: boolean): Promise<boolean> {
  if (collective.worldSize === 1) return requestedHere;
  const flag = new Float64Array([requestedHere ? 1 : 0]);
  await collective.allReduce(flag, 'max');
  return flag[0] > 0;
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
