// The prior's attention masks against the paper's definition written out by hand (6 text + 4x4 image), against pair
// counts from closed-form formulas (256 text + 32x32 image: 0.33M / 0.31M / 0.35M / 0.82M), and the layer
// schedule of the 64-layer model.
import * as assert from 'node:assert';
import {
  MaskKind, MaskSpec, allowedPairs, denseMask, isAllowed, layerMaskKind, layerSchedule, seqLen,
} from '../../src/core/models/prior/masks';

// 6 text + 4x4 image = 22 positions. Text rows: causal over text, nothing of the image. Image rows: all 6 text keys
// ("111111") then the 16 image keys, written out from the definition position by position (raster order r*4 + c).
const TEXT_ROWS = [
  '1000000000000000000000',
  '1100000000000000000000',
  '1110000000000000000000',
  '1111000000000000000000',
  '1111100000000000000000',
  '1111110000000000000000',
];
// row: image i sees image j in [i - 4, i].
const ROW_IMAGE = [
  '1000000000000000',
  '1100000000000000',
  '1110000000000000',
  '1111000000000000',
  '1111100000000000',
  '0111110000000000',
  '0011111000000000',
  '0001111100000000',
  '0000111110000000',
  '0000011111000000',
  '0000001111100000',
  '0000000111110000',
  '0000000011111000',
  '0000000001111100',
  '0000000000111110',
  '0000000000011111',
];
// column: the same column, rows above and itself.
const COLUMN_IMAGE = [
  '1000000000000000',
  '0100000000000000',
  '0010000000000000',
  '0001000000000000',
  '1000100000000000',
  '0100010000000000',
  '0010001000000000',
  '0001000100000000',
  '1000100010000000',
  '0100010001000000',
  '0010001000100000',
  '0001000100010000',
  '1000100010001000',
  '0100010001000100',
  '0010001000100010',
  '0001000100010001',
];
// conv, k = 3: the 3x3 neighbourhood, causal (the previous row's three cells, the left cell, itself).
const CONV3_IMAGE = [
  '1000000000000000',
  '1100000000000000',
  '0110000000000000',
  '0011000000000000',
  '1100100000000000',
  '1110110000000000',
  '0111011000000000',
  '0011001100000000',
  '0000110010000000',
  '0000111011000000',
  '0000011101100000',
  '0000001100110000',
  '0000000011001000',
  '0000000011101100',
  '0000000001110110',
  '0000000000110011',
];
// conv, k = 1: only itself among the image tokens.
const CONV1_IMAGE = Array.from({ length: 16 }, (_, i) => '0'.repeat(i) + '1' + '0'.repeat(15 - i));

function literal(image: string[]): number[] {
  const rows = [...TEXT_ROWS, ...image.map((r) => '111111' + r)];
  for (const r of rows) assert.strictEqual(r.length, 22);
  return rows.join('').split('').map(Number);
}

function spec(kind: MaskKind, textLen: number, gridSide: number, convKernel = 11): MaskSpec {
  return { kind, textLen, gridSide, convKernel };
}

describe('prior attention masks', () => {
  const cases: Array<[string, MaskSpec, string[]]> = [
    ['row', spec('row', 6, 4), ROW_IMAGE],
    ['column', spec('column', 6, 4), COLUMN_IMAGE],
    ['conv k=3', spec('conv', 6, 4, 3), CONV3_IMAGE],
    ['conv k=1', spec('conv', 6, 4, 1), CONV1_IMAGE],
  ];
  for (const [name, s, image] of cases) {
    it(`${name}: 6 text + 4x4 image equals the mask written out by hand`, () => {
      const want = literal(image);
      assert.strictEqual(seqLen(s), 22);
      const m = denseMask(s);
      try {
        assert.deepStrictEqual(m.shape, [22, 22]);
        assert.strictEqual(m.dtype, 'i32');
        assert.deepStrictEqual(Array.from(m.toArray()), want);
      } finally {
        m.dispose();
      }
      for (let i = 0; i < 22; i++) {
        for (let j = 0; j < 22; j++) assert.strictEqual(isAllowed(s, i, j), want[i * 22 + j] === 1, `(${i}, ${j})`);
      }
      assert.strictEqual(allowedPairs(s), want.reduce((a, b) => a + b, 0));
    });
  }

  it('conv with k >= 2 * side - 1 is the full causal mask', () => {
    const s = spec('conv', 3, 4, 7);
    const T = seqLen(s);
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) assert.strictEqual(isAllowed(s, i, j), j <= i);
  });

  it('256 text + 32x32 image: pair counts equal closed-form counts (0.33M, 0.31M, 0.35M, 0.82M)', () => {
    const Tt = 256;
    const W = 32;
    const N = W * W;
    const text = (Tt * (Tt + 1)) / 2; // text-to-text causal
    const imageToText = N * Tt;
    // row: image i sees min(i, W) + 1 image keys.
    const row = N + (W * (W - 1)) / 2 + (N - W) * W;
    // column: (r, c) sees r + 1 keys.
    const column = (W * W * (W + 1)) / 2;
    // conv, h = 5: same row min(c, h) + 1 keys; each of min(r, h) rows above min(c, h) + min(W-1-c, h) + 1 keys.
    const h = 5;
    const sumMinC = 0 + 1 + 2 + 3 + 4 + h * (W - h); // sum over c of min(c, h) = sum over r of min(r, h)
    const conv = W * (sumMinC + W) + sumMinC * (2 * sumMinC + W);
    const causal = ((Tt + N) * (Tt + N + 1)) / 2;
    assert.deepStrictEqual([text, imageToText, row, column, conv, causal], [32896, 262144, 33264, 16896, 52354, 819840]);
    assert.strictEqual(allowedPairs(spec('row', Tt, W)), text + imageToText + row); // 328304
    assert.strictEqual(allowedPairs(spec('column', Tt, W)), text + imageToText + column); // 311936
    assert.strictEqual(allowedPairs(spec('conv', Tt, W, 11)), text + imageToText + conv); // 347394
    assert.strictEqual(allowedPairs(spec('conv', Tt, W, 2 * W - 1)), causal);
    // The dense mask agrees with the pair count.
    const m = denseMask(spec('column', Tt, W));
    try {
      assert.strictEqual((m.toArray() as Int32Array).reduce((a, b) => a + b, 0), text + imageToText + column);
    } finally {
      m.dispose();
    }
  });

  it('64-layer schedule: row, column, (row, row, row, column) x 15, row, conv', () => {
    const want: MaskKind[] = ['row', 'column'];
    for (let r = 0; r < 15; r++) want.push('row', 'row', 'row', 'column');
    want.push('row', 'conv');
    assert.strictEqual(want.length, 64);
    assert.deepStrictEqual(layerSchedule(64), want);
    for (let l = 0; l < 64; l++) assert.strictEqual(layerMaskKind(l, 64), want[l]);
    assert.deepStrictEqual(layerSchedule(1), ['conv']);
    assert.deepStrictEqual(layerSchedule(3), ['row', 'column', 'conv']);
  });

  it('rejects bad specs and positions with clear errors', () => {
    assert.throws(() => denseMask(spec('conv', 2, 3, 4)), /convKernel must be an odd integer/);
    assert.throws(() => denseMask(spec('diag' as MaskKind, 2, 3)), /unknown mask kind "diag"/);
    assert.throws(() => allowedPairs(spec('row', -1, 3)), /textLen must be an integer >= 0/);
    assert.throws(() => denseMask(spec('row', 1, 0)), /gridSide must be an integer >= 1/);
    assert.throws(() => isAllowed(spec('row', 2, 2), 6, 0), /outside 0..5/);
    assert.throws(() => layerMaskKind(8, 8), /outside 0..7/);
  });
});
