// The CUDA backend's host logic, run on the CPU (native/cuda/attention_plan.h compiled into the main addon through
// native/cuda/shared/plan_napi.cc): the sparse-attention masks, the column mask's transposed layout, the tile lists
// the kernels visit and the launch shapes. Checked against an independent brute force over every (query, key) pair
// using src/core/models/prior/masks.ts isAllowed, for text lengths 1..7, grids 3..32 and conv kernels 1..11.
import * as assert from 'node:assert';
import { native } from '../../src/core/native';
import { MaskKind, MaskSpec, allowedPairs, isAllowed, seqLen } from '../../src/core/models/prior/masks';

interface TilePlan {
  T: number;
  nQueryTiles: number;
  nKeyTiles: number;
  rowStart: Int32Array;
  keyTile: Int32Array;
  fullQ: Int32Array;
  colStart: Int32Array;
  queryTile: Int32Array;
  fullK: Int32Array;
  allowedPairs: number;
}
interface Launch {
  tile: number;
  dmax: number;
  gridX: number;
  gridY: number;
  smemForward: number;
  smemDq: number;
  smemDkv: number;
  error: string;
}
type SpecArgs = [MaskKind, number, number, number];
const fn = <F>(name: string): F => native[name] as F;
const args = (s: MaskSpec): SpecArgs => [s.kind, s.textLen, s.gridSide, s.convKernel];
const planTiles = (s: MaskSpec, bq: number, bk: number): TilePlan =>
  fn<(...a: [...SpecArgs, number, number]) => TilePlan>('attnPlanTiles')(...args(s), bq, bk);
const planLayout = (s: MaskSpec): Int32Array => fn<(...a: SpecArgs) => Int32Array>('attnPlanLayout')(...args(s));
const planAllowed = (s: MaskSpec, layout: boolean): Uint8Array =>
  fn<(...a: [...SpecArgs, boolean]) => Uint8Array>('attnPlanAllowed')(...args(s), layout);
const planRuns = (s: MaskSpec, p: number): Int32Array =>
  fn<(...a: [...SpecArgs, number]) => Int32Array>('attnPlanRuns')(...args(s), p);
const planLaunch = (s: MaskSpec, B: number, H: number, D: number, Dv: number): Launch =>
  fn<(...a: [...SpecArgs, number, number, number, number]) => Launch>('attnPlanLaunch')(...args(s), B, H, D, Dv);

const ATTN_TILE = 64; // the kernels' tile (attention_plan.h kAttnTile)

/** The layout written out independently: the column mask's image part transposed, everything else in place. */
function expectedLayout(s: MaskSpec): Int32Array {
  const T = seqLen(s);
  const out = new Int32Array(T);
  for (let p = 0; p < T; p++) {
    if (s.kind !== 'column' || p < s.textLen) {
      out[p] = p;
    } else {
      const a = p - s.textLen;
      const c = Math.floor(a / s.gridSide);
      const r = a % s.gridSide;
      out[p] = s.textLen + r * s.gridSide + c;
    }
  }
  return out;
}

/** Brute force: for every tile pair, the number of allowed pairs in layout order, from isAllowed on every pair. */
function bruteTiles(s: MaskSpec, bq: number, bk: number): { counts: Map<number, number>; total: number } {
  const T = seqLen(s);
  const seq = expectedLayout(s);
  const nKt = Math.ceil(T / bk);
  const counts = new Map<number, number>();
  let total = 0;
  for (let p = 0; p < T; p++) {
    const qt = Math.floor(p / bq);
    for (let q = 0; q < T; q++) {
      if (!isAllowed(s, seq[p], seq[q])) continue;
      const key = qt * nKt + Math.floor(q / bk);
      counts.set(key, (counts.get(key) ?? 0) + 1);
      total++;
    }
  }
  return { counts, total };
}

function checkPlan(s: MaskSpec, bq: number, bk: number): void {
  const what = `${JSON.stringify(s)} tiles ${bq}x${bk}`;
  const T = seqLen(s);
  const plan = planTiles(s, bq, bk);
  const nQt = Math.ceil(T / bq);
  const nKt = Math.ceil(T / bk);
  assert.strictEqual(plan.T, T, what);
  assert.strictEqual(plan.nQueryTiles, nQt, what);
  assert.strictEqual(plan.nKeyTiles, nKt, what);
  const { counts, total } = bruteTiles(s, bq, bk);
  assert.strictEqual(plan.allowedPairs, total, `${what}: allowed pairs`);
  // By query tile: exactly the tiles with an allowed pair, increasing, full iff every in-range pair is allowed.
  assert.strictEqual(plan.rowStart.length, nQt + 1, what);
  assert.strictEqual(plan.rowStart[0], 0, what);
  assert.strictEqual(plan.rowStart[nQt], counts.size, `${what}: number of visited tiles`);
  for (let qt = 0; qt < nQt; qt++) {
    const listed: number[] = [];
    for (let e = plan.rowStart[qt]; e < plan.rowStart[qt + 1]; e++) {
      const kt = plan.keyTile[e];
      listed.push(kt);
      const n = counts.get(qt * nKt + kt);
      assert.ok(n !== undefined, `${what}: query tile ${qt} lists key tile ${kt}, which has no allowed pair`);
      const rows = Math.min(T, (qt + 1) * bq) - qt * bq;
      const cols = Math.min(T, (kt + 1) * bk) - kt * bk;
      assert.strictEqual(plan.fullQ[e], n === rows * cols ? 1 : 0, `${what}: full flag of tile (${qt}, ${kt})`);
    }
    const expected = [...counts.keys()].filter((k) => Math.floor(k / nKt) === qt).map((k) => k % nKt).sort((a, b) => a - b);
    assert.deepStrictEqual(listed, expected, `${what}: key tiles of query tile ${qt}`);
  }
  // By key tile: the transpose, query tiles increasing, same flags.
  assert.strictEqual(plan.colStart.length, nKt + 1, what);
  const fromRows = new Map<number, number>();
  for (let qt = 0; qt < nQt; qt++) {
    for (let e = plan.rowStart[qt]; e < plan.rowStart[qt + 1]; e++) fromRows.set(plan.keyTile[e] * nQt + qt, plan.fullQ[e]);
  }
  let seen = 0;
  for (let kt = 0; kt < nKt; kt++) {
    let prev = -1;
    for (let e = plan.colStart[kt]; e < plan.colStart[kt + 1]; e++) {
      const qt = plan.queryTile[e];
      assert.ok(qt > prev, `${what}: query tiles of key tile ${kt} must increase`);
      prev = qt;
      assert.strictEqual(plan.fullK[e], fromRows.get(kt * nQt + qt), `${what}: by-key entry (${qt}, ${kt})`);
      seen++;
    }
  }
  assert.strictEqual(seen, fromRows.size, `${what}: by-key lists hold every pair once`);
}

// Text 1..7, grid 3..32, every kind and conv kernel 1..11, the text length cycling so every one meets every kind.
function specs(): MaskSpec[] {
  const out: MaskSpec[] = [];
  let n = 0;
  for (let grid = 3; grid <= 32; grid++) {
    const kinds: Array<[MaskKind, number]> = [['row', 1], ['column', 1], ...[1, 3, 5, 7, 9, 11].map((k) => ['conv', k] as [MaskKind, number])];
    for (const [kind, convKernel] of kinds) out.push({ kind, textLen: (n++ % 7) + 1, gridSide: grid, convKernel });
  }
  return out;
}

describe('CUDA backend host logic (CPU)', function () {
  this.timeout(300000);

  it('lays out positions as the masks need: the column mask transposed, the others in place', () => {
    for (const s of specs()) {
      const got = planLayout(s);
      assert.deepStrictEqual(Array.from(got), Array.from(expectedLayout(s)), JSON.stringify(s));
      assert.strictEqual(new Set(got).size, seqLen(s), `${JSON.stringify(s)}: a permutation`);
    }
  });

  it('tests pairs exactly as masks.ts isAllowed, in sequence and in layout order', () => {
    for (const s of specs().filter((x) => x.gridSide <= 12)) {
      const T = seqLen(s);
      const seq = expectedLayout(s);
      const bySeq = planAllowed(s, false);
      const byLayout = planAllowed(s, true);
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          assert.strictEqual(bySeq[i * T + j], isAllowed(s, i, j) ? 1 : 0, `${JSON.stringify(s)} (${i}, ${j})`);
          assert.strictEqual(byLayout[i * T + j], isAllowed(s, seq[i], seq[j]) ? 1 : 0, `${JSON.stringify(s)} layout (${i}, ${j})`);
        }
      }
    }
  });

  it("derives each query's allowed keys as disjoint runs that equal the pairwise mask", () => {
    for (const s of specs().filter((x) => x.gridSide <= 16)) {
      const T = seqLen(s);
      const seq = expectedLayout(s);
      for (let p = 0; p < T; p++) {
        const runs = planRuns(s, p);
        const fromRuns = new Uint8Array(T);
        let prevHi = -1;
        for (let r = 0; r < runs.length; r += 2) {
          assert.ok(runs[r] > prevHi && runs[r] <= runs[r + 1], `${JSON.stringify(s)} query ${p}: runs disjoint, increasing`);
          prevHi = runs[r + 1];
          for (let q = runs[r]; q <= runs[r + 1]; q++) fromRuns[q] = 1;
        }
        for (let q = 0; q < T; q++) {
          assert.strictEqual(fromRuns[q], isAllowed(s, seq[p], seq[q]) ? 1 : 0, `${JSON.stringify(s)} (${p}, ${q})`);
        }
      }
    }
  });

  it('lists, for every query tile, exactly the key tiles with an allowed pair and flags the full ones (64 x 64)', () => {
    for (const s of specs()) checkPlan(s, ATTN_TILE, ATTN_TILE);
  });

  it('does the same for odd and unequal tile sizes', () => {
    const tiles: Array<[number, number]> = [[1, 1], [5, 7], [13, 3], [16, 32], [33, 17]];
    let n = 0;
    for (const s of specs().filter((x) => x.gridSide <= 20)) {
      const [bq, bk] = tiles[n++ % tiles.length];
      checkPlan(s, bq, bk);
    }
  });

  it("covers the prior's own masks (256 text + 32 x 32 image) and counts their pairs as masks.ts does", () => {
    for (const [kind, convKernel] of [['row', 1], ['column', 1], ['conv', 11]] as Array<[MaskKind, number]>) {
      const s: MaskSpec = { kind, textLen: 256, gridSide: 32, convKernel };
      checkPlan(s, ATTN_TILE, ATTN_TILE);
      assert.strictEqual(planTiles(s, ATTN_TILE, ATTN_TILE).allowedPairs, allowedPairs(s));
    }
  });

  it('the transposed layout makes the column mask visit fewer tiles than raster order would', () => {
    const s: MaskSpec = { kind: 'column', textLen: 256, gridSide: 32, convKernel: 1 };
    const inLayout = planTiles(s, ATTN_TILE, ATTN_TILE).rowStart.at(-1)!;
    // Raster order: tiles with an allowed pair, counted by brute force without the transpose.
    const T = seqLen(s);
    const n = Math.ceil(T / ATTN_TILE);
    const hit = new Uint8Array(n * n);
    for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) if (isAllowed(s, i, j)) hit[Math.floor(i / ATTN_TILE) * n + Math.floor(j / ATTN_TILE)] = 1;
    const inRaster = hit.reduce((a, b) => a + b, 0);
    assert.ok(inLayout < inRaster, `layout ${inLayout} tiles, raster ${inRaster}`);
  });

  it('chooses launch shapes that fit the kernels and an H100, and refuses shapes they cannot run', () => {
    const s: MaskSpec = { kind: 'row', textLen: 256, gridSide: 32, convKernel: 1 };
    const L = planLaunch(s, 4, 62, 64, 64);
    assert.strictEqual(L.error, '');
    assert.strictEqual(L.tile, ATTN_TILE);
    assert.strictEqual(L.dmax, 64);
    assert.strictEqual(L.gridX, Math.ceil(1280 / ATTN_TILE));
    assert.strictEqual(L.gridY, 4 * 62);
    // Dynamic shared memory: K, V tiles (forward); padded own rows + tiles (backward). H100 allows 227 KiB per block.
    assert.strictEqual(L.smemForward, 2 * 64 * 64 * 4);
    assert.strictEqual(L.smemDq, 2 * 64 * 65 * 4 + 2 * 64 * 64 * 4);
    assert.strictEqual(L.smemDkv, L.smemDq + 2 * 64 * 4);
    for (const b of [L.smemForward, L.smemDq, L.smemDkv]) assert.ok(b <= 227 * 1024);
    assert.strictEqual(planLaunch(s, 1, 1, 7, 3).error, '');
    assert.match(planLaunch(s, 1, 1, 65, 64).error, /must be in 1\.\.64/);
    assert.match(planLaunch(s, 1, 1, 64, 0).error, /must be in 1\.\.64/);
    assert.match(planLaunch(s, 1000, 100, 64, 64).error, /B \* H = 100000/);
    const shape = fn<(n: number, cols: number) => { blocks: number; rowThreads: number }>('cudaLaunchShape');
    assert.deepStrictEqual(shape(0, 1), { blocks: 0, rowThreads: 32 });
    assert.deepStrictEqual(shape(1, 1024), { blocks: 1, rowThreads: 32 });
    assert.deepStrictEqual(shape(257, 1025), { blocks: 2, rowThreads: 256 });
    assert.strictEqual(shape(1e9, 8192).blocks, 4096); // grid-stride loops cover the rest
  });

  it('rejects bad mask specs with a clear error', () => {
    assert.throws(() => planTiles({ kind: 'conv', textLen: 3, gridSide: 4, convKernel: 4 }, 64, 64), /convKernel must be an odd/);
    assert.throws(() => planTiles({ kind: 'diagonal' as MaskKind, textLen: 3, gridSide: 4, convKernel: 1 }, 64, 64), /unknown mask kind/);
    assert.throws(() => planTiles({ kind: 'row', textLen: 3, gridSide: 0, convKernel: 1 }, 64, 64), /bad mask spec|gridSide/);
    assert.throws(() => planTiles({ kind: 'row', textLen: 3, gridSide: 4, convKernel: 1 }, 0, 64), /tile sizes/);
  });
});
