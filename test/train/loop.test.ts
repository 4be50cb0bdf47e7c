/**
 * The one training loop (src/core/train/loop.ts) with a tiny fake task: a least-squares fit of 3 weights on batches
 * drawn from the task's own Philox stream, and a second parameter pulled to a constant (undecayed). What the loop owns
 * is checked here once for every trainer: checkpoint cadence and pruning, metrics lines and their interval, exact
 * resume (an interrupted and resumed run equals an uninterrupted one, bitwise), stop() checkpointing where it stopped,
 * a refused start or resume leaving the folder byte-identical, the gradient-sync seam, and rank 1 of a data-parallel
 * run writing nothing.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CheckpointError, CheckpointState, listCheckpoints, readCheckpointState } from '../../src/core/checkpoint';
import { Collective, SingleProcess } from '../../src/core/distributed/collective';
import { GradientSync } from '../../src/core/distributed/gradient-sync';
import { CoreEvent } from '../../src/core/events';
import { add, matmul, mean, scale, square, sub, sum } from '../../src/core/ops';
import { Philox, Tensor, keep } from '../../src/core/tensor';
import { TrainingLoop, TrainingLoopOptions } from '../../src/core/train/loop';
import { MetricsInterval, PrepareContext, RunWriter, StepContext, StepForward, StepValues, TaskCheckpointState, TaskModel, TaskSettings, TrainingTask } from '../../src/core/train/task';
import { hashTree, temporaryDir } from '../commands/helpers';

const B = 4;
const TRUE_W = [0.5, -1, 2];

interface FakeBatch {
  readonly x: Float32Array;
  readonly y: Float32Array;
}

interface FakeOptions {
  readonly steps?: number;
  readonly checkpointEvery?: number;
  readonly keepCheckpoints?: number;
  /** Called after each update (a test stops the loop here, as a signal handler would). */
  readonly onStep?: (step: number) => void;
  /** Throws from prepare: a check that refuses the run. */
  readonly refuse?: boolean;
}

class FakeTask implements TrainingTask<FakeBatch, StepForward, never, { draws: number }> {
  readonly kind = 'dvae' as const;
  readonly device = 'cpu' as const;
  readonly settings: TaskSettings;
  private data = new Philox(7).fork(1);
  private draws = 0;
  private w?: Tensor;
  private u?: Tensor;
  private readonly target = keep(Tensor.from([1, 2], [2]));

  constructor(private readonly options: FakeOptions = {}) {
    this.settings = {
      steps: options.steps ?? 7,
      progressTask: 'train',
      label: 'fake',
      divergenceHint: 'lower the learning rate',
      optimizer: { lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 },
      gradClip: 1,
      logEvery: 2,
      checkpointEvery: options.checkpointEvery ?? 3,
      keepCheckpoints: options.keepCheckpoints ?? 0,
      validateEvery: 4,
    };
  }

  lr(index: number): number {
    return 0.05 / (1 + index);
  }

  async prepare(context: PrepareContext): Promise<void> {
    if (this.options.refuse) throw new CheckpointError('refused by the task', 'a check of the task failed');
    assert.equal(context.worldSize >= 1, true);
  }

  createModel(): TaskModel {
    this.w = keep(Tensor.from([0.1, 0.2, -0.3], [3, 1]));
    this.u = keep(Tensor.from([0, 0], [2]));
    this.w.requiresGrad = true;
    this.u.requiresGrad = true;
    return { named: [['w', this.w], ['u', this.u]], decays: (name) => name === 'w', parameterCount: 5 };
  }

  restore(state: CheckpointState): void {
    assert.ok(state.rng.data, 'the task saved its stream');
    this.data = Philox.fromState(state.rng.data);
    this.draws = (state.metrics as { draws: number }).draws;
  }

  writeRunFiles(writer: RunWriter): Array<{ kind: string; path: string }> {
    return [{ kind: 'config', path: writer.writeFile('fake.json', '{"fake": true}\n') }];
  }

  async nextBatch(): Promise<FakeBatch> {
    const x = this.data.fillUniform(new Float32Array(B * 3));
    const noise = this.data.fillUniform(new Float32Array(B));
    this.draws++;
    const y = new Float32Array(B);
    for (let b = 0; b < B; b++) y[b] = TRUE_W.reduce((s, w, k) => s + w * x[b * 3 + k], 0) + 0.1 * (noise[b] - 0.5);
    return { x, y };
  }

  forward(batch: FakeBatch, _context: StepContext): StepForward {
    const w = this.w as Tensor;
    const u = this.u as Tensor;
    const fit = mean(square(sub(matmul(Tensor.from(batch.x, [B, 3]), w), Tensor.from(batch.y, [B, 1]))));
    const pull = sum(square(sub(u, this.target)));
    return { loss: add(fit, scale(pull, 0.01)), scalars: { fit } };
  }

  afterStep(values: StepValues): void {
    this.options.onStep?.(values.step);
  }

  progressMetrics(values: StepValues): Record<string, number> {
    return { loss: values.loss };
  }

  metricsLine(values: StepValues, _batch: FakeBatch, interval: MetricsInterval): Record<string, unknown> {
    return { loss: values.loss, fit: values.scalars.fit, loss_mean: interval.lossMean, grad_norm: values.gradNorm, lr: values.lr, seconds: interval.seconds };
  }

  validate(step: number, writer: RunWriter): void {
    writer.appendMetrics({ step, split: 'val', w: Array.from((this.w as Tensor).toArray()) });
  }

  checkpointState(): TaskCheckpointState {
    return { rng: { data: this.data.state() }, metrics: { draws: this.draws } };
  }

  result(): { draws: number } {
    return { draws: this.draws };
  }

  dispose(): void {
    this.w?.dispose();
    this.u?.dispose();
    this.target.dispose();
  }
}

function train(out: string, options: FakeOptions & Omit<TrainingLoopOptions, 'out'> = {}) {
  const loop = new TrainingLoop(new FakeTask({ ...options, onStep: (step) => (step === stopAt.get(out) ? loop.stop() : undefined) }), { out, ...options });
  return { loop, run: () => loop.run() };
}
/** Where a run of a test stops (its out folder -> update). */
const stopAt = new Map<string, number>();

function lines(out: string): Array<Record<string, unknown>> {
  return fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
}

/** The metrics lines without the wall-clock field. */
function timeless(out: string): Array<Record<string, unknown>> {
  return lines(out).map(({ seconds: _s, ...rest }) => rest);
}

describe('train: the one training loop (a fake task)', () => {
  it('checkpoints every checkpointEvery and at the end, logs every logEvery, validates every validateEvery and at the end', async () => {
    const out = temporaryDir('dalle-loop-');
    const events: CoreEvent[] = [];
    const result = await new TrainingLoop(new FakeTask(), { out, events: { emit: (e) => events.push(e) } }).run();
    assert.deepEqual([result.step, result.totalSteps, result.stopped, result.draws], [7, 7, false, 7]);
    assert.equal(result.checkpoint, path.join(out, 'checkpoints', 'step-7'));
    assert.deepEqual(listCheckpoints(out), [3, 6, 7]);
    assert.equal(fs.readFileSync(path.join(out, 'latest'), 'utf8'), 'checkpoints/step-7\n');
    assert.deepEqual(lines(out).map((l) => [l.step, l.split ?? 'train']), [[2, 'train'], [4, 'train'], [4, 'val'], [6, 'train'], [7, 'val']]);
    assert.equal(fs.readFileSync(path.join(out, 'fake.json'), 'utf8'), '{"fake": true}\n');
    // The loss mean of a line is over the updates since the previous line.
    const state = readCheckpointState(path.join(out, 'checkpoints', 'step-7'));
    assert.deepEqual([state.kind, state.step, state.optimizer_step], ['dvae', 7, 7]);
    assert.equal((state.metrics as { interval_steps: number }).interval_steps, 1, 'update 7 is in an interval no line closed yet');
    assert.equal((state.metrics as { interval_loss_sum: number }).interval_loss_sum, result.lastLoss);
    assert.equal((state.metrics as { draws: number }).draws, 7);
    const train = lines(out).filter((l) => l.split === undefined);
    assert.ok(train.every((l) => typeof l.loss_mean === 'number' && l.loss_mean !== l.loss), 'a mean over two updates');
    assert.ok(train.every((l) => (l.grad_norm as number) > 0), 'the norm before clipping');
    // Events: progress ends at 7, a metrics event per train line, an artifact per checkpoint and for fake.json.
    const progress = events.filter((e) => e.type === 'progress');
    assert.equal(progress.at(-1)?.type === 'progress' && progress.at(-1)?.step, 7);
    assert.deepEqual(events.filter((e) => e.type === 'metrics').map((e) => e.type === 'metrics' && e.step), [2, 4, 6]);
    assert.deepEqual(events.filter((e) => e.type === 'artifact').map((e) => e.type === 'artifact' && path.relative(out, e.path)), ['fake.json', 'checkpoints/step-3', 'checkpoints/step-6', 'checkpoints/step-7']);
    assert.ok(events.some((e) => e.type === 'done'));
  });

  it('keeps the newest keepCheckpoints checkpoints', async () => {
    const out = temporaryDir('dalle-loop-');
    await new TrainingLoop(new FakeTask({ steps: 10, checkpointEvery: 2, keepCheckpoints: 2 }), { out }).run();
    assert.deepEqual(listCheckpoints(out), [8, 10]);
  });

  it('stop() checkpoints at the current update; the resumed run equals an uninterrupted one bitwise (lines, weights, moments)', async () => {
    const straight = temporaryDir('dalle-loop-');
    await train(straight).run();
    // Stopped at update 5: inside a metrics interval (lines at 4 and 6), between checkpoints (3 and 6).
    const out = temporaryDir('dalle-loop-');
    stopAt.set(out, 5);
    const first = await train(out).run();
    assert.deepEqual([first.step, first.stopped], [5, true]);
    assert.deepEqual(listCheckpoints(out), [3, 5]);
    assert.equal(fs.readFileSync(path.join(out, 'latest'), 'utf8'), 'checkpoints/step-5\n');
    assert.equal((readCheckpointState(path.join(out, 'checkpoints', 'step-5')).metrics as { interval_steps: number }).interval_steps, 1);
    stopAt.delete(out);
    const second = await train(out, { resume: true }).run();
    assert.deepEqual([second.resumedFrom, second.step, second.stopped], [5, 7, false]);
    assert.deepEqual(timeless(out), timeless(straight));
    for (const file of ['model.safetensors', 'optimizer.safetensors']) {
      assert.ok(fs.readFileSync(path.join(out, 'checkpoints', 'step-7', file)).equals(fs.readFileSync(path.join(straight, 'checkpoints', 'step-7', file))), file);
    }
  });

  it('a resume drops the metrics lines written after its checkpoint (a run that died before checkpointing)', async () => {
    const straight = temporaryDir('dalle-loop-');
    await train(straight).run();
    const out = temporaryDir('dalle-loop-');
    await train(out, { steps: 7, checkpointEvery: 3 }).run();
    // As if the run had died after update 7's line but before its checkpoint: latest names step-6.
    fs.rmSync(path.join(out, 'checkpoints', 'step-7'), { recursive: true });
    fs.writeFileSync(path.join(out, 'latest'), 'checkpoints/step-6\n');
    await train(out, { resume: true }).run();
    assert.deepEqual(timeless(out), timeless(straight));
  });

  it('a refused start or resume leaves the folder byte-identical', async () => {
    const out = temporaryDir('dalle-loop-');
    await train(out, { steps: 4 }).run();
    const before = hashTree(out);
    await assert.rejects(train(out).run(), (e) => e instanceof CheckpointError && /already has checkpoints/.test(e.message));
    await assert.rejects(train(out, { resume: true, steps: 3 }).run(), (e) => e instanceof CheckpointError && /past train\.steps = 3/.test(e.message));
    await assert.rejects(train(out, { resume: true, refuse: true }).run(), (e) => e instanceof CheckpointError && /refused by the task/.test(e.message));
    assert.deepEqual(hashTree(out), before);
    const fresh = path.join(temporaryDir('dalle-loop-'), 'new');
    await assert.rejects(train(fresh, { refuse: true }).run(), /refused by the task/);
    assert.ok(!fs.existsSync(fresh), 'a refused fresh start leaves no folder');
  });

  it('a non-finite loss ends the run with an error naming the update, and no checkpoint of it', async () => {
    const out = temporaryDir('dalle-loop-');
    class Diverging extends FakeTask {
      override forward(batch: FakeBatch, context: StepContext): StepForward {
        const f = super.forward(batch, context);
        return context.index === 2 ? { loss: scale(f.loss, Infinity), scalars: f.scalars } : f;
      }
    }
    await assert.rejects(new TrainingLoop(new Diverging(), { out }).run(), /the fake loss or gradient became non-finite at update 3 \(loss .*Infinity.*\); lower the learning rate/);
    assert.deepEqual(listCheckpoints(out), []);
  });

  it('the gradient sync is made from the parameters and finishes once per update, after backward and before the update', async () => {
    const out = temporaryDir('dalle-loop-');
    const calls = { made: 0, ready: 0, finish: 0, disposed: 0 };
    let params: readonly Tensor[] = [];
    const gradientSync = (p: readonly Tensor[]): GradientSync => {
      calls.made++;
      params = p;
      return {
        onGradientReady: () => calls.ready++,
        finish: async () => {
          calls.finish++;
          assert.ok(params.every((t) => t.grad !== undefined && t.grad !== null), 'every gradient is there');
        },
        dispose: () => calls.disposed++,
      };
    };
    await new TrainingLoop(new FakeTask({ steps: 3 }), { out, gradientSync }).run();
    assert.equal(params.length, 2);
    assert.deepEqual(calls, { made: 1, ready: 6, finish: 3, disposed: 1 });
  });

  it('rank 1 of a data-parallel run trains alike and writes nothing: no folder, no checkpoint, no progress', async () => {
    // Rank 1 of 2 ranks that hold the same values: a sum doubles them, a max or min leaves them.
    const single = new SingleProcess();
    const reduce = (data: Float32Array | Float64Array, op: 'sum' | 'max' | 'min'): void => {
      if (op === 'sum') for (let i = 0; i < data.length; i++) data[i] *= 2;
    };
    const rank1: Collective = {
      backend: 'single',
      rank: 1,
      worldSize: 2,
      localRank: 1,
      bytesReduced: 0,
      allReduce: async (data, op) => reduce(data, op),
      allReduceSync: (data, op) => reduce(data, op),
      allReduceBuffers: (buffers) => single.allReduceBuffers(buffers),
      broadcast: async () => {},
      barrier: async () => {},
      close: () => {},
    };
    const straight = temporaryDir('dalle-loop-');
    const reference = await new TrainingLoop(new FakeTask(), { out: straight }).run();
    const out = path.join(temporaryDir('dalle-loop-'), 'run');
    const events: CoreEvent[] = [];
    const result = await new TrainingLoop(new FakeTask(), { out, collective: rank1, events: { emit: (e) => events.push(e) } }).run();
    assert.deepEqual([result.step, result.lastLoss], [7, reference.lastLoss]);
    assert.ok(!fs.existsSync(out), 'rank 1 wrote nothing, not even the folder or its lock');
    assert.deepEqual(events.filter((e) => ['progress', 'metrics', 'artifact', 'done'].includes(e.type)), []);
    assert.ok(events.some((e) => e.type === 'stage'), 'its stages are still reported');
  });
});
