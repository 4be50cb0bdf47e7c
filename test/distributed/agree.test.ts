/** The per-step agreements of data-parallel ranks: stop together, average scalars, pass over the same failed records. */
import assert from 'node:assert/strict';
import { agreeToStop, loaderPart, meanOfScalars } from '../../src/core/distributed/agree';
import { SingleProcess } from '../../src/core/distributed/collective';
import { inProcessRanks } from '../harness/in-process-ranks';

describe('distributed: per-step agreements', () => {
  it('every rank stops, with the largest exit code asked, when any rank asked to; none when none did', async () => {
    const ranks = inProcessRanks(3);
    assert.deepEqual(await Promise.all(ranks.map((c, r) => agreeToStop(c, r === 2 ? 143 : 0))), [143, 143, 143]);
    assert.deepEqual(await Promise.all(ranks.map((c, r) => agreeToStop(c, [130, 0, 143][r]))), [143, 143, 143]);
    assert.deepEqual(await Promise.all(ranks.map((c) => agreeToStop(c, 0))), [0, 0, 0]);
    assert.equal(await agreeToStop(new SingleProcess(), 130), 130);
  });

  it('averages each scalar over the ranks', async () => {
    const ranks = inProcessRanks(4);
    const out = await Promise.all(ranks.map((c, r) => meanOfScalars(c, [r, 10 * r, -1])));
    for (const values of out) assert.deepEqual(values, [1.5, 15, -1]);
  });

  it('gives every rank the union of the records that failed in any part', async () => {
    const ranks = inProcessRanks(4);
    const parts = ranks.map((c) => loaderPart(c, 8));
    parts.forEach((p, r) => assert.deepEqual([p.index, p.count], [r, 4]));
    const failed = [[], [17, 3], [], [0]];
    const agreed = await Promise.all(parts.map((p, r) => p.agreeOnFailures!(failed[r])));
    for (const a of agreed) assert.deepEqual([...a].sort((x, y) => x - y), [0, 3, 17]);
    await assert.rejects(parts[0].agreeOnFailures!([1, 2, 3]), /3 failures reported in a part of 2/);
    assert.deepEqual(loaderPart(new SingleProcess(), 8), { index: 0, count: 1 });
  });
});
