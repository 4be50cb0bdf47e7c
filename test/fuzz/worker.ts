/**
 * One fuzz run of one parser, in a worker thread (fuzz.test.ts starts it with a heap limit and watches it, so a hang
 * or a memory blow-up stops the worker, not the test process). Messages to the parent: `begin` before each input (the
 * parent knows which input hung), `bug` for an input answered with anything but a named error (or that left more than
 * MEMORY_LIMIT_BYTES of buffers behind), and `done` with the tallies.
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { fuzzInput, fuzzTarget } from './targets';

export interface FuzzJob {
  readonly target: string;
  readonly seed: number;
  readonly inputs: number;
  /** Scratch folder for the parsers that read files. */
  readonly dir: string;
  /** Replay these saved inputs (regression cases) instead of mutating. */
  readonly replay?: readonly string[];
}

export type FuzzMessage =
  | { readonly type: 'begin'; readonly index: number }
  | { readonly type: 'bug'; readonly index: number; readonly problem: string; readonly input: Uint8Array }
  | { readonly type: 'done'; readonly accepted: number; readonly refused: Readonly<Record<string, number>>; readonly seeds: number };

/** Buffers still held after an input is parsed: more than this is a memory blow-up (inputs are at most 1 MiB). */
const MEMORY_LIMIT_BYTES = 256 * 1024 * 1024;

async function run(job: FuzzJob): Promise<void> {
  const post = (message: FuzzMessage): void => parentPort!.postMessage(message);
  const target = fuzzTarget(job.target);
  const seeds = await target.seeds(job.dir);
  const refused: Record<string, number> = {};
  let accepted = 0;

  /** Parses one input; returns the problem when it is a bug, else tallies it. */
  const attempt = async (bytes: Uint8Array): Promise<string | undefined> => {
    try {
      await target.parse(bytes, job.dir);
      accepted++;
    } catch (error) {
      const name = error instanceof Error ? error.name : typeof error;
      if (!target.namedErrors.includes(name)) return `threw ${error instanceof Error ? error.stack ?? error.message : String(error)}`;
      refused[name] = (refused[name] ?? 0) + 1;
    }
    const held = process.memoryUsage().arrayBuffers;
    return held > MEMORY_LIMIT_BYTES ? `left ${Math.round(held / 2 ** 20)} MiB of buffers allocated` : undefined;
  };

  // The seeds must be accepted, or the mutations start from inputs that test nothing.
  for (const [index, seed] of seeds.entries()) {
    post({ type: 'begin', index: -1 - index });
    const problem = await attempt(seed);
    if (problem !== undefined || accepted !== index + 1) {
      post({ type: 'bug', index: -1 - index, problem: `seed ${index} is not accepted: ${problem ?? 'refused'}`, input: seed });
    }
  }
  accepted = 0;
  const inputs = job.replay ?? Array.from({ length: job.inputs }, (_, index) => index);
  for (const [index, item] of inputs.entries()) {
    post({ type: 'begin', index });
    const bytes = typeof item === 'string' ? new Uint8Array(fs.readFileSync(item)) : fuzzInput(target, seeds, job.seed, item);
    const problem = await attempt(bytes);
    if (problem !== undefined) post({ type: 'bug', index, problem, input: bytes });
  }
  post({ type: 'done', accepted, refused, seeds: seeds.length });
}

if (parentPort !== null && workerData !== null) {
  run(workerData as FuzzJob).catch((error: unknown) => {
    throw error; // an error outside any input (seeds could not be made): the worker's 'error' event reports it
  });
}
