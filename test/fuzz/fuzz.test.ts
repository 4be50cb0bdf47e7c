/**
 * Fuzzing of every parser of outside input (targets.ts): a fixed number of seeded mutations of small valid inputs per
 * parser (mutate.ts), each of which must be accepted with a consistent result or refused with the parser's named error:
 * never another exception (TypeError, RangeError, a raw errno), a hang, or a memory blow-up. Each parser runs in a
 * worker thread with a heap limit, watched for hangs. The run is the same every time (DALLE_FUZZ_SEED and
 * DALLE_FUZZ_SCALE change the seed and multiply the inputs, to fuzz longer by hand). Inputs that once found a bug are
 * kept in test/fuzz/regressions/<parser>/ and replayed every run.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FUZZ_TARGETS, fuzzInput, fuzzTarget, FuzzTarget } from './targets';
import type { FuzzJob, FuzzMessage } from './worker';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const REGRESSIONS = path.join(ROOT, 'test', 'fuzz', 'regressions');
const SEED = Number(process.env.DALLE_FUZZ_SEED ?? 20261206);
const SCALE = Number(process.env.DALLE_FUZZ_SCALE ?? 1);
/** An input still being parsed after this long is a hang. */
const HANG_MS = 10_000;
/** The heap a parser's worker may use (inputs are at most 1 MiB). */
const HEAP_LIMIT_MB = 384;

interface FuzzRun {
  readonly inputs: number;
  readonly accepted: number;
  readonly refused: Readonly<Record<string, number>>;
  readonly ms: number;
  readonly bugs: FuzzBug[];
}

/** An input that was not answered with a named error; `saved`: where the input was written, to replay it. */
interface FuzzBug {
  readonly index: number;
  readonly problem: string;
  saved?: string;
}

/** The folder name of a parser's regression inputs: 'yaml config' -> yaml-config. */
function slug(target: FuzzTarget): string {
  return target.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
}

/** The input a worker was parsing when it hung or died (it cannot send it then): made again from (seed, index). */
async function inputAt(job: FuzzJob, index: number): Promise<Uint8Array | undefined> {
  if (job.replay !== undefined) return index >= 0 ? new Uint8Array(fs.readFileSync(job.replay[index])) : undefined;
  const seeds = await fuzzTarget(job.target).seeds(fs.mkdtempSync(`${job.dir}-again-`));
  return index >= 0 ? fuzzInput(fuzzTarget(job.target), seeds, job.seed, index) : seeds[-1 - index];
}

/** Runs `job` in a worker; a bug's input is saved where the report says, to be kept as a regression case. */
async function runWorker(job: FuzzJob, failures: string): Promise<FuzzRun> {
  const run = await watchWorker(job, failures);
  for (const bug of run.bugs) {
    if (bug.saved !== undefined || Number.isNaN(bug.index)) continue;
    const input = await inputAt(job, bug.index);
    if (input !== undefined) bug.saved = saveFailure(failures, job, bug.index, input);
  }
  return run;
}

function saveFailure(failures: string, job: FuzzJob, index: number, input: Uint8Array): string {
  fs.mkdirSync(failures, { recursive: true });
  const file = path.join(failures, `${job.target.replace(/\W+/g, '-')}-seed${job.seed}-input${index}.bin`);
  fs.writeFileSync(file, input);
  return file;
}

function watchWorker(job: FuzzJob, failures: string): Promise<FuzzRun> {
  const started = Date.now();
  const bugs: FuzzBug[] = [];
  let current = { index: Number.NaN, since: Date.now() };
  let terminated = false;
  let done = false;
  return new Promise((resolve, reject) => {
    const worker = new Worker(path.join(__dirname, 'worker.js'), {
      workerData: job,
      resourceLimits: { maxOldGenerationSizeMb: HEAP_LIMIT_MB },
    });
    const watchdog = setInterval(() => {
      if (Date.now() - current.since <= HANG_MS) return;
      bugs.push({ index: current.index, problem: `still parsing after ${HANG_MS / 1000} s (a hang)` });
      terminated = true;
      void worker.terminate();
    }, 250);
    const finish = (result: FuzzRun | Error): void => {
      if (done) return;
      done = true;
      clearInterval(watchdog);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    worker.on('message', (message: FuzzMessage) => {
      if (message.type === 'begin') current = { index: message.index, since: Date.now() };
      else if (message.type === 'bug') bugs.push({ index: message.index, problem: message.problem, saved: saveFailure(failures, job, message.index, message.input) });
      else finish({ inputs: job.replay?.length ?? job.inputs, accepted: message.accepted, refused: message.refused, ms: Date.now() - started, bugs });
    });
    worker.on('error', (error: Error & { code?: string }) => {
      // ERR_WORKER_OUT_OF_MEMORY: the parser blew the heap limit on the input it was parsing.
      bugs.push({ index: current.index, problem: `the worker died: ${error.code ?? ''} ${error.stack ?? error.message}` });
      finish({ inputs: job.inputs, accepted: 0, refused: {}, ms: Date.now() - started, bugs });
    });
    worker.on('exit', (code) => {
      // Without 'done' and without an error: its event loop ran dry while a parse was pending, a promise that never
      // settles (in a command, the process would end there, silently).
      if (!terminated && bugs.length === 0) bugs.push({ index: current.index, problem: `the parse never finished: the worker's event loop ran dry (exit code ${code}); a promise that never settles` });
      finish({ inputs: job.inputs, accepted: 0, refused: {}, ms: Date.now() - started, bugs });
    });
  });
}

function describeRun(target: FuzzTarget, run: FuzzRun): string {
  const refused = Object.values(run.refused).reduce((sum, count) => sum + count, 0);
  const byName = Object.entries(run.refused).map(([name, count]) => `${name} ${count}`).join(', ');
  return `fuzz ${target.name}: ${run.inputs} inputs in ${(run.ms / 1000).toFixed(1)} s: ${run.accepted} accepted, ` +
    `${refused} refused${byName === '' ? '' : ` (${byName})`}, ${run.bugs.length} bugs`;
}

function describeBugs(run: FuzzRun): string {
  return run.bugs.slice(0, 5).map((bug) => `input ${bug.index}${bug.saved ? ` (saved as ${bug.saved})` : ''}: ${bug.problem}`).join('\n');
}

describe('fuzz: parsers of outside input accept or refuse with their named error', function () {
  this.timeout(120_000);
  let work: string;
  let failures: string;

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'dalle-fuzz-'));
    failures = path.join(os.tmpdir(), 'dalle-fuzz-failures');
  });

  after(() => fs.rmSync(work, { recursive: true, force: true }));

  for (const target of FUZZ_TARGETS) {
    it(`${target.name}: ${target.inputs} mutated inputs, each accepted or refused with ${target.namedErrors.join(' / ')}`, async () => {
      const dir = fs.mkdtempSync(path.join(work, `${slug(target)}-`));
      const run = await runWorker({ target: target.name, seed: SEED, inputs: Math.round(target.inputs * SCALE), dir }, failures);
      console.log(`      ${describeRun(target, run)}`);
      assert.deepEqual(run.bugs, [], `${describeRun(target, run)}\n${describeBugs(run)}\nreplay: DALLE_FUZZ_SEED=${SEED}; keep a fixed bug's input in ${path.join(REGRESSIONS, slug(target))}/`);
      assert.ok(run.accepted > 0 && run.accepted < run.inputs, `some inputs must be accepted and some refused: ${describeRun(target, run)}`);
    });
  }

  it('the inputs that once found bugs (test/fuzz/regressions/<parser>/) are accepted or refused with the named error', async () => {
    for (const target of FUZZ_TARGETS) {
      const folder = path.join(REGRESSIONS, slug(target));
      const replay = fs.existsSync(folder) ? fs.readdirSync(folder).sort().map((name) => path.join(folder, name)) : [];
      if (replay.length === 0) continue;
      const dir = fs.mkdtempSync(path.join(work, `${slug(target)}-replay-`));
      const run = await runWorker({ target: target.name, seed: SEED, inputs: 0, dir, replay }, failures);
      console.log(`      replayed ${describeRun(target, run)}`);
      assert.deepEqual(run.bugs, [], `${target.name} regression inputs:\n${describeBugs(run)}`);
    }
  });
});
