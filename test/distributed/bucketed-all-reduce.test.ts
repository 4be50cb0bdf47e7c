/**
 * Gradient buckets: reduced as soon as backward completes them (last layers first), each once, in the same order on
 * every rank; the mean over ranks after finish(); parameters without a gradient left without one.
 */
import assert from 'node:assert/strict';
import { BucketedAllReduce } from '../../src/core/distributed/bucketed-all-reduce';
import { DeviceBuffer, SingleProcess } from '../../src/core/distributed/collective';
import { matmul, sum, tanh } from '../../src/core/ops';
import { Philox, Tensor, backward, scaleInPlace, whileGradientsComplete } from '../../src/core/tensor';

/**
 * N ranks that hold the same gradients: their sum is N times each. Records each reduction and whether backward was
 * still running; `byAddress` finds the gradient a buffer belongs to (a CPU tensor's storage).
 */
class SameGradientRanks extends SingleProcess {
  readonly calls: Array<{ names: string[]; duringBackward: boolean }> = [];
  inBackward = true;
  constructor(readonly ranks: number, private readonly byAddress: () => Map<number, [string, Tensor]>) {
    super();
    Object.defineProperty(this, 'worldSize', { value: ranks });
  }
  override async allReduceBuffers(buffers: readonly DeviceBuffer[]): Promise<void> {
    const map = this.byAddress();
    const names = buffers.map((b) => {
      const entry = map.get(b.address);
      assert.ok(entry, 'a buffer that is no parameter\'s gradient');
      assert.equal(b.count, entry[1].size);
      return entry[0];
    });
    this.calls.push({ names, duringBackward: this.inBackward });
    await Promise.resolve();
    for (const b of buffers) scaleInPlace(map.get(b.address)![1], this.ranks);
  }
}

function randomTensor(rng: Philox, shape: number[]): Tensor {
  const data = rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)));
  const t = Tensor.from(data, shape);
  t.requiresGrad = true;
  return t;
}

describe('distributed: bucketed gradient all-reduce', () => {
  it('starts each bucket during backward once its gradients are complete, last layers first, and leaves the mean', async () => {
    const rng = new Philox(5);
    // Three layers of 7x7 (196 bytes each) and an unused parameter; buckets of 400 bytes hold two layers at most.
    const named: Array<[string, Tensor]> = [['w1', randomTensor(rng, [7, 7])], ['w2', randomTensor(rng, [7, 7])], ['w3', randomTensor(rng, [7, 7])], ['unused', randomTensor(rng, [3])]];
    const x = Tensor.from(rng.fillNormal(new Float32Array(5 * 7)), [5, 7]);
    const grads = (): Map<number, [string, Tensor]> => new Map(named.filter(([, t]) => t.grad).map(([n, t]) => [t.grad!.address, [n, t.grad!]]));
    const ranks = new SameGradientRanks(4, grads);
    const sync = new BucketedAllReduce(named.map(([, t]) => t), ranks, 400);
    assert.equal(sync.bucketCount, 2); // [unused, w3] and [w2, w1] in reverse order
    const loss = () => sum(tanh(matmul(tanh(matmul(tanh(matmul(x, named[0][1])), named[1][1])), named[2][1])));
    backward(loss());
    const expected = named.slice(0, 3).map(([, t]) => Float32Array.from(t.grad!.toArray() as Float32Array));
    for (const [, t] of named) if (t.grad) t.grad.backend.fill(t.grad.address, t.grad.size, 0, 'f32');

    whileGradientsComplete(sync.onGradientReady, () => backward(loss()));
    ranks.inBackward = false;
    await sync.finish();
    // w3's bucket waits for 'unused', which never gets a gradient: it starts in finish(); w2 + w1 start in backward.
    assert.deepEqual(ranks.calls, [{ names: ['w2', 'w1'], duringBackward: true }, { names: ['w3'], duringBackward: false }]);
    named.slice(0, 3).forEach(([name, t], i) => assert.deepEqual(t.grad!.toArray(), expected[i], name));
    assert.ok(!named[3][1].grad, 'the unused parameter has no gradient');

    // The next step starts afresh: the same buckets again.
    ranks.calls.length = 0;
    ranks.inBackward = true;
    whileGradientsComplete(sync.onGradientReady, () => backward(loss()));
    ranks.inBackward = false;
    await sync.finish();
    assert.equal(ranks.calls.length, 2);
  });

  it('refuses a gradient completed twice in one step, and a bucket size that is not positive', () => {
    const p = randomTensor(new Philox(1), [2]);
    const sync = new BucketedAllReduce([p], new SingleProcess(), 1024);
    sync.onGradientReady(p);
    assert.throws(() => sync.onGradientReady(p), /completed twice/);
    assert.throws(() => new BucketedAllReduce([p], new SingleProcess(), 0), /must be > 0/);
  });
});
