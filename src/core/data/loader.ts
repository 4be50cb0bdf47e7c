/**
 * The training data loader: batches of B images as one float32 (B, 3, R, R) array in [0, 1], with one caption each.
 *
 * Order: epoch e visits the records in a shuffle that depends only on (seed, e), and draws each record's caption
 * from its captions with numbers that depend only on (seed, e) too (order.ts). Batches run on across epoch ends, so
 * training is a stream of steps. A record that fails to decode is skipped, counted by reason, and replaced by the
 * next one in the order; it is remembered and passed over in later epochs.
 *
 * Prefetch: the loader keeps `prefetchBatches` x B records decoding (sharp on libuv's thread pool) while the caller
 * trains, and refills that window each time it hands out a batch. Records that are whole files go to sharp as paths,
 * so each is one worker-thread task that finishes during a synchronous training step (image.ts).
 *
 * Resume: state() is (epoch, position) after the last batch handed out. A loader made with that state hands out
 * exactly the batches an uninterrupted loader would have handed out next: decoding is deterministic, so the same
 * records fail in the same places. Save state() (or batch.state) with each checkpoint.
 *
 * In a training loop:
 *   const source = await openDataSource(config.data.path);
 *   const options = { batchSize: config.train.batch_size, resolution: config.data.resolution,
 *     seed: config.runtime.seed, maxInputPixels: config.data.max_input_pixels,
 *     prefetchBatches: config.data.prefetch_batches };
 *   const loader = saved ? DataLoader.fromState(source, options, saved) : new DataLoader(source, options);
 *   for (let step = firstStep; step < config.train.steps; step++) {
 *     const batch = await loader.next();               // (B, 3, R, R) in [0, 1], decoded while the last step ran
 *     const images = Tensor.from(batch.images, batch.shape);
 *     ... forward, backward, optimizer update ...
 *     if (checkpointDue(step)) writeCheckpoint({ ..., data: batch.state });   // state.json: the data position
 *   }
 *   loader.close();
 */
import { CoreEvent, EventSink, silentSink } from '../events';
import { Philox } from '../tensor/rng';
import { DataError, SkipError, SkipReason } from './errors';
import { decodeImage, DEFAULT_MAX_INPUT_PIXELS, DecodeOptions, rgbToChw } from './image';
import { captionDraws, dataRandom, epochOrder, pickCaption } from './order';
import { SkipReport, SkipSummary } from './skips';
import { DataRecord, DataSource } from './sources/types';

export interface LoaderOptions {
  /** Images per batch (B). */
  readonly batchSize: number;
  /** Side of the square images in pixels (R). */
  readonly resolution: number;
  /** The run's seed; the loader draws from its own fork of it (order.ts). */
  readonly seed: number;
  /** Images with more pixels are skipped as 'too-large' (default DEFAULT_MAX_INPUT_PIXELS). */
  readonly maxInputPixels?: number;
  /** Batches decoding ahead of the one being trained on (K, default 2). */
  readonly prefetchBatches?: number;
  /** Visit records in a seeded shuffle (default) or in source order (evaluation). */
  readonly shuffle?: boolean;
  /** Data parallelism: hand out only this part of each global batch of batchSize records (default: all of it). */
  readonly part?: LoaderPart;
  readonly events?: EventSink;
}

/**
 * One of `count` equal parts of every global batch (a data-parallel rank's): part `index` gets records
 * [index * B / count, (index + 1) * B / count) of the batch that one process would have been handed.
 */
export interface LoaderPart {
  readonly index: number;
  readonly count: number;
  /**
   * The records (source indices) that failed to decode in this part of the batch being formed -> those that failed
   * in any part (the union; the same answer on every part). Required when count > 1: every part must pass over the
   * same records, so that the parts stay the parts of one batch.
   */
  readonly agreeOnFailures?: (failedHere: readonly number[]) => Promise<readonly number[]>;
}

/** Where the loader is: JSON-safe, for a checkpoint's state.json. */
export interface LoaderState {
  /** The seed and record count it was made with: resuming on other data would not be a resume. */
  readonly seed: number;
  readonly records: number;
  /** The next record to hand out is order(epoch)[position]. */
  readonly epoch: number;
  readonly position: number;
}

export interface Batch {
  /** (B, 3, R, R), RGB in [0, 1]: Tensor.from(batch.images, batch.shape). With options.part, B = batchSize / part.count. */
  readonly images: Float32Array;
  readonly shape: readonly [number, number, number, number];
  /** One caption per image ('' for an image without captions). */
  readonly captions: readonly string[];
  /** The records' ids, for reports and debugging. */
  readonly ids: readonly string[];
  /** The epoch of the batch's first image. */
  readonly epoch: number;
  /** The loader's state right after this batch: what a checkpoint taken after training on it must save. */
  readonly state: LoaderState;
}

/** What the loader has done, for a command's result or a run's report. */
export interface LoaderReport {
  readonly records: number;
  readonly skipped: SkipSummary;
}

interface Position {
  readonly epoch: number;
  readonly position: number;
}

type Decoded = Uint8Array | SkipError;

/** A record of the order, with its place and caption: one of a global batch's records. */
interface Candidate {
  readonly index: number;
  readonly epoch: number;
  readonly position: number;
  /** The loader's position once the batch that ends with this record is consumed. */
  readonly after: Position;
  readonly caption: string;
}

/** A record whose decode has started. */
interface InFlight {
  readonly index: number;
  readonly epoch: number;
  readonly position: number;
  readonly outcome: Promise<Decoded>;
  settled: boolean;
}

const DEFAULT_PREFETCH_BATCHES = 2;

export class DataLoader {
  readonly batchSize: number;
  readonly resolution: number;
  readonly prefetchBatches: number;
  private readonly records: readonly DataRecord[];
  private readonly seed: number;
  private readonly shuffle: boolean;
  private readonly decodeOptions: DecodeOptions;
  private readonly events: EventSink;
  private readonly random: Philox;
  /** Index-time skips of the source plus decode-time skips. */
  private readonly skips = new SkipReport();
  /** Records that failed to decode: passed over from then on (their failure is deterministic). */
  private readonly bad = new Set<number>();
  /** Decodes started, by `${epoch}:${position}`: this part of the batch being formed and of the prefetched ones. */
  private readonly inFlight = new Map<string, InFlight>();
  private readonly part: LoaderPart;
  /** After the last batch handed out. */
  private consumed: Position;
  private plan: { epoch: number; order: Uint32Array; draws: Float64Array } | undefined;
  /** next() calls run one after another, so concurrent callers still get batches in order. */
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(source: DataSource, options: LoaderOptions, state?: LoaderState) {
    this.records = source.records;
    this.batchSize = positiveInteger(options.batchSize, 'batchSize');
    this.resolution = positiveInteger(options.resolution, 'resolution');
    this.prefetchBatches = positiveInteger(options.prefetchBatches ?? DEFAULT_PREFETCH_BATCHES, 'prefetchBatches');
    this.seed = options.seed;
    this.shuffle = options.shuffle ?? true;
    this.decodeOptions = {
      resolution: this.resolution,
      maxInputPixels: options.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS,
    };
    this.events = options.events ?? silentSink;
    this.random = dataRandom(this.seed);
    this.skips.merge(source.skipped);
    if (this.records.length === 0) {
      throw new DataError(
        `no usable records in ${source.path} (${source.skipped.describe()})`,
        `run \`dalle dataset inspect ${source.path}\` to see what was skipped and why`,
      );
    }
    this.consumed = state === undefined ? { epoch: 0, position: 0 } : this.checkState(state, source.path);
    this.part = options.part ?? { index: 0, count: 1 };
    const { index, count } = this.part;
    if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(index) || index < 0 || index >= count) {
      throw new RangeError(`DataLoader: part ${index} of ${count} is not a part (0 <= index < count)`);
    }
    if (this.batchSize % count !== 0) {
      throw new RangeError(`DataLoader: a batch of ${this.batchSize} cannot be cut into ${count} equal parts`);
    }
    if (count > 1 && !this.part.agreeOnFailures) throw new RangeError('DataLoader: a part of several needs agreeOnFailures');
  }

  /** A loader that continues from `state` (saved from state() or batch.state of an earlier run). */
  static fromState(source: DataSource, options: LoaderOptions, state: LoaderState): DataLoader {
    return new DataLoader(source, options, state);
  }

  state(): LoaderState {
    return { seed: this.seed, records: this.records.length, ...this.consumed };
  }

  /** The next batch. Decoding of the batches after it continues in the background while the caller trains. */
  next(): Promise<Batch> {
    const batch = this.tail.then(() => this.assemble());
    this.tail = batch.catch(() => undefined);
    return batch;
  }

  /** Records in the prefetch window whose decode has finished (a test of the prefetch; a gauge for reports). */
  readyCount(): number {
    let ready = 0;
    for (const item of this.inFlight.values()) if (item.settled) ready++;
    return ready;
  }

  report(): LoaderReport {
    return { records: this.records.length, skipped: this.skips.toJSON() };
  }

  get skipped(): SkipReport {
    return this.skips;
  }

  /** Stops prefetching (a pending next() rejects). Decodes already started finish on their own, unused. */
  close(): void {
    this.closed = true;
    this.inFlight.clear();
  }

  private async assemble(): Promise<Batch> {
    if (this.closed) throw new Error('dalle: DataLoader.next() after close()');
    await deliverFinishedWork();
    const { batchSize, resolution } = this;
    const part = this.part;
    const partSize = batchSize / part.count;
    const imageSize = 3 * resolution * resolution;
    // The global batch is the next batchSize records in the order that are not known to be bad; this process decodes
    // its part. A record that fails is known bad from then on (on every part, once they agree), and the batch is
    // formed again from the same start: so it is the same batch whatever the number of parts.
    for (;;) {
      const candidates = this.candidates(this.consumed, batchSize);
      const mine = candidates.slice(part.index * partSize, (part.index + 1) * partSize);
      this.startDecodes(this.consumed);
      const outcomes = await Promise.all(mine.map((c) => this.started(c).outcome));
      if (this.closed) throw new Error('dalle: DataLoader closed while a batch was being assembled');
      const failedHere = mine.map((c, i) => [c, outcomes[i]] as const).filter(([, o]) => o instanceof SkipError);
      for (const [c, error] of failedHere) this.noteSkip(c.index, error as SkipError);
      const failed = part.agreeOnFailures ? await part.agreeOnFailures(failedHere.map(([c]) => c.index)) : failedHere.map(([c]) => c.index);
      if (failed.length > 0) {
        for (const index of failed) this.bad.add(index);
        continue;
      }
      const images = new Float32Array(partSize * imageSize);
      mine.forEach((c, i) => rgbToChw(outcomes[i] as Uint8Array, resolution, images, i * imageSize));
      this.consumed = candidates[candidates.length - 1].after;
      this.forgetBefore(this.consumed);
      this.startDecodes(this.consumed);
      return {
        images,
        shape: [partSize, 3, resolution, resolution],
        captions: mine.map((c) => c.caption),
        ids: mine.map((c) => this.records[c.index].id),
        epoch: candidates[0].epoch,
        state: this.state(),
      };
    }
  }

  /** The next `count` records from `from` in the order, passing over records known to be bad. */
  private candidates(from: Position, count: number): Candidate[] {
    const n = this.records.length;
    const out: Candidate[] = [];
    let at = from;
    while (out.length < count) {
      if (this.bad.size >= n) {
        throw new DataError(
          `none of the ${n} records could be decoded (${this.skips.describe()})`,
          'run `dalle dataset inspect PATH` to see the reasons',
        );
      }
      const { epoch, position } = at;
      const plan = this.planFor(epoch);
      const index = plan.order[position];
      at = position + 1 === n ? { epoch: epoch + 1, position: 0 } : { epoch, position: position + 1 };
      if (this.bad.has(index)) continue;
      out.push({ index, epoch, position, after: at, caption: pickCaption(this.records[index].captions, plan.draws[index]) });
    }
    return out;
  }

  /** Starts decoding this part of the prefetchBatches global batches from `from` on (the next is the one formed next). */
  private startDecodes(from: Position): void {
    if (this.closed) return;
    const partSize = this.batchSize / this.part.count;
    const all = this.candidates(from, this.prefetchBatches * this.batchSize);
    for (let b = 0; b < this.prefetchBatches; b++) {
      const first = b * this.batchSize + this.part.index * partSize;
      for (const c of all.slice(first, first + partSize)) this.started(c);
    }
  }

  /** The decode of a candidate, started on first request. */
  private started(c: Candidate): InFlight {
    const key = `${c.epoch}:${c.position}`;
    let item = this.inFlight.get(key);
    if (!item) {
      const created: InFlight = { index: c.index, epoch: c.epoch, position: c.position, outcome: this.decode(this.records[c.index]), settled: false };
      void created.outcome.then(
        () => (created.settled = true),
        () => (created.settled = true),
      );
      this.inFlight.set(key, created);
      item = created;
    }
    return item;
  }

  /** Drops decodes of records before `at` (consumed, or passed over). */
  private forgetBefore(at: Position): void {
    for (const [key, item] of this.inFlight) {
      if (item.epoch < at.epoch || (item.epoch === at.epoch && item.position < at.position)) this.inFlight.delete(key);
    }
  }

  private planFor(epoch: number): { epoch: number; order: Uint32Array; draws: Float64Array } {
    if (this.plan?.epoch !== epoch) {
      const n = this.records.length;
      this.plan = {
        epoch,
        order: epochOrder(this.random, epoch, n, this.shuffle),
        draws: captionDraws(this.random, epoch, n),
      };
      this.emit({ type: 'log', level: 'debug', message: `data: epoch ${epoch} begins (${n} records)` });
    }
    return this.plan;
  }

  /** Resolves to the decoded image or the SkipError; other errors (bugs) reject and surface from next(). */
  private decode(record: DataRecord): Promise<Decoded> {
    const work =
      record.file !== undefined
        ? decodeImage(record.file, this.decodeOptions)
        : record.load().then((bytes) => decodeImage(bytes, this.decodeOptions));
    const outcome = work.catch((error: unknown) => {
      if (error instanceof SkipError) return error;
      throw error;
    });
    outcome.catch(() => undefined); // rejections are handled where the item is consumed (or dropped on close)
    return outcome;
  }

  private noteSkip(index: number, error: SkipError): void {
    if (this.bad.has(index)) return; // in flight twice (a window longer than an epoch): count it once
    this.bad.add(index);
    const id = this.records[index].id;
    const firstOfReason = this.skips.count(error.reason) === 0;
    this.skips.add(error.reason, id, error.detail);
    this.emit({
      type: 'log',
      level: firstOfReason ? 'warn' : 'debug',
      message: `data: skipped ${id} (${error.reason}: ${error.detail})${firstOfReason ? laterSkips(error.reason) : ''}`,
    });
  }

  private checkState(state: LoaderState, where: string): Position {
    const n = this.records.length;
    const changed =
      state.records !== n
        ? `it was saved for ${state.records} records and ${where} has ${n}`
        : state.seed !== this.seed
          ? `it was saved with seed ${state.seed}, not ${this.seed}`
          : undefined;
    if (changed !== undefined) {
      throw new DataError(
        `cannot resume the data loader: ${changed}`,
        'resume with the same data set and seed, or start a new run',
      );
    }
    if (!Number.isSafeInteger(state.epoch) || state.epoch < 0 || !Number.isSafeInteger(state.position)) {
      throw new DataError(`cannot resume the data loader: bad position ${JSON.stringify(state)}`);
    }
    if (state.position < 0 || state.position >= n) {
      throw new DataError(`cannot resume the data loader: position ${state.position} is outside 0..${n - 1}`);
    }
    return { epoch: state.epoch, position: state.position };
  }

  private emit(event: CoreEvent): void {
    this.events.emit(event);
  }
}

/**
 * Lets the event loop run its poll phase once (between two check phases), so reads that finished during the caller's
 * synchronous training step are delivered and the decodes waiting on them (tar records: read, then decode) start
 * now, to run during the next step, rather than when a later batch waits for them. Costs two loop turns.
 */
async function deliverFinishedWork(): Promise<void> {
  for (let turn = 0; turn < 2; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
}

function laterSkips(reason: SkipReason): string {
  return `; further '${reason}' skips are counted in the report`;
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`DataLoader: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}
