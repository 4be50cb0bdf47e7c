// The values the NCCL GPU test and its worker processes reduce: f32 values that differ by rank, buffer and index.

/** Buffer sizes in f32 values: a middle-sized one, one reduced only in a window, one large enough to race. */
export const NCCL_TEST_SIZES = [1003, 1300, 300007];

export function ncclTestValue(rank: number, buffer: number, i: number): number {
  return Math.fround(Math.sin(1 + rank * 7919 + buffer * 104729 + i * 0.37) * (1 + (i % 13)));
}
