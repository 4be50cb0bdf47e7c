// Starts the ranks of a Gloo group as node processes running gloo-worker.js on 127.0.0.1 (a free port each time), and
// collects what each prints (one JSON object per line).
import { ChildProcess, spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';

export interface WorkerEvent {
  rank: number;
  event: string;
  [field: string]: unknown;
}

export interface RankProcess {
  rank: number;
  child: ChildProcess;
  events: WorkerEvent[];
  stderr: string[];
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
  /** The first event named `event`, waiting up to `ms`. */
  next(event: string, ms: number): Promise<WorkerEvent>;
}

/** A TCP port nobody listens on right now (the kernel's pick, released again). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface StartOptions {
  worldSize: number;
  /** The ranks to start (default: all). */
  ranks?: number[];
  scenarios: string[];
  port: number;
  timeoutMs: number;
  seed: number;
  outDir: string;
}

export function startRanks(o: StartOptions): RankProcess[] {
  const worker = path.join(__dirname, 'gloo-worker.js');
  const ranks = o.ranks ?? Array.from({ length: o.worldSize }, (_, r) => r);
  return ranks.map((rank) => {
    const child = spawn(process.execPath, [worker, ...o.scenarios], {
      env: {
        ...process.env,
        RANK: String(rank), WORLD_SIZE: String(o.worldSize), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(o.port),
        DALLE_TEST_TIMEOUT_MS: String(o.timeoutMs), DALLE_TEST_SEED: String(o.seed), DALLE_TEST_OUT: o.outDir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const events: WorkerEvent[] = [];
    const stderr: string[] = [];
    const waiters: Array<() => void> = [];
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          events.push(JSON.parse(line) as WorkerEvent);
        } catch {
          stderr.push(`(stdout) ${line}`);
        }
        waiters.splice(0).forEach((w) => w());
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
    let gone = false;
    const exited = new Promise<number | string>((resolve) => {
      child.on('close', (code, signal) => {
        gone = true;
        resolve(code ?? signal ?? 'unknown');
        waiters.splice(0).forEach((w) => w());
      });
    });
    const next = (event: string, ms: number): Promise<WorkerEvent> => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`rank ${rank}: no '${event}' within ${ms} ms; events ${JSON.stringify(events)}; stderr ${stderr.join('')}`)), ms);
      const check = (): void => {
        const found = events.find((e) => e.event === event);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        } else if (gone) {
          clearTimeout(timer);
          reject(new Error(`rank ${rank} exited (${child.exitCode ?? child.signalCode}) without '${event}'; events ${JSON.stringify(events)}; stderr ${stderr.join('')}`));
        } else {
          waiters.push(check);
        }
      };
      check();
    });
    return { rank, child, events, stderr, exited, next };
  });
}

/** Ends every rank still running (SIGCONT first, for a stopped one). */
export async function endRanks(ranks: readonly RankProcess[]): Promise<void> {
  for (const r of ranks) {
    if (r.child.exitCode === null && r.child.signalCode === null) {
      r.child.kill('SIGCONT');
      r.child.kill('SIGKILL');
    }
  }
  await Promise.all(ranks.map((r) => r.exited));
}
