// The dVAE loss on a part of a data-parallel batch: the parts' gradients, averaged, are the global batch's, with the
// noise each part draws being its share of the global draw, and the usage term's batch mean taken over every part.
// Key: B = global batch, P = parts.
import * as assert from 'node:assert';
import { Collective, SingleProcess } from '../../src/core/distributed/collective';
import { meanOverRanks } from '../../src/core/distributed/mean-over-ranks';
import { Dvae, dvaeLoss } from '../../src/core/models/dvae';
import { Philox, Tensor, backward, tidy, zeroGrad } from '../../src/core/tensor';
import { makeRandom } from '../harness/random';

const TINY = { n_hid: 8, n_groups: 2, n_blk_per_group: 1, vocab_size: 16 } as const;
const SIDE = 8;

/** A collective whose sum over ranks is given: the other ranks' statistics are known in advance (one process here). */
function knownRanks(worldSize: number, others: () => Float32Array): Collective {
  const c = new SingleProcess();
  Object.defineProperty(c, 'worldSize', { value: worldSize });
  c.allReduceSync = (data) => {
    const o = others();
    for (let i = 0; i < data.length; i++) data[i] += o[i];
  };
  return c;
}

function gradients(model: Dvae): Float64Array[] {
  return model.parameters().map((p) => Float64Array.from(p.grad!.toArray() as Float32Array));
}

describe('dVAE loss on parts of a global batch', () => {
  for (const usageWeight of [0, 0.5]) {
    it(`P = 2 and 4 parts average to the global batch's gradient (usage weight ${usageWeight})`, () => {
      const rand = makeRandom(9);
      const B = 4;
      const images = Float32Array.from({ length: B * 3 * SIDE * SIDE }, () => rand.uniform());
      const model = new Dvae(TINY, { seed: 2 });
      const params = model.parameters();
      const options = (rng: Philox) => ({ tau: 0.7, beta: 0.3, rng, usageWeight });
      // The global batch in one process; and each part's batch-mean posterior, for the stand-in of the other ranks.
      zeroGrad(params);
      const noise = new Philox(4);
      tidy(() => backward(dvaeLoss(model, Tensor.from(images, [B, 3, SIDE, SIDE]), options(noise)).loss));
      const expected = gradients(model);
      for (const P of [2, 4]) {
        const b = B / P;
        const partImages = (i: number) => images.subarray(i * b * 3 * SIDE * SIDE, (i + 1) * b * 3 * SIDE * SIDE);
        // Each part's mean posterior (the statistic meanOverParts receives), from a forward of that part alone.
        const stats: Float32Array[] = [];
        for (let i = 0; i < P; i++) {
          tidy(() => {
            const capture = { index: i, count: P, meanOverParts: (x: Tensor) => { stats[i] = Float32Array.from(x.toArray() as Float32Array); return x; } };
            dvaeLoss(model, Tensor.from(partImages(i), [b, 3, SIDE, SIDE]), { ...options(new Philox(4)), part: capture });
          });
        }
        const total = expected.map((g) => new Float64Array(g.length));
        for (let i = 0; i < P; i++) {
          const others = () => {
            const o = new Float32Array(stats[i].length);
            stats.forEach((s, j) => { if (j !== i) for (let k = 0; k < s.length; k++) o[k] += s[k]; });
            return o;
          };
          const collective = knownRanks(P, others);
          zeroGrad(params);
          const rng = new Philox(4); // every rank holds the same noise stream state
          tidy(() => backward(dvaeLoss(model, Tensor.from(partImages(i), [b, 3, SIDE, SIDE]), { ...options(rng), part: { index: i, count: P, meanOverParts: (x) => meanOverRanks(x, collective) } }).loss));
          assert.equal(rng.offset, noise.offset, 'every part leaves the stream where the global draw did');
          gradients(model).forEach((g, k) => g.forEach((v, j) => (total[k][j] += v / P)));
        }
        let worst = 0;
        total.forEach((g, k) => g.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[k][j]) / (1e-3 + Math.abs(expected[k][j]))))));
        assert.ok(worst < 1e-4, `P = ${P}: largest relative difference ${worst}`);
      }
    });
  }
});
