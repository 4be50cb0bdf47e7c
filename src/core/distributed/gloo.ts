/**
 * The Gloo backend of Collective: the addon build/Release/dalle_collective.node (native/collective, built where
 * Gloo's headers and library are), loaded lazily, so a build without Gloo loads everything else and says why it has
 * no Gloo. Rank 0 serves a small TCP store (rendezvous, and every rank's heartbeat); Gloo's algorithms (allreduce,
 * broadcast, barrier) over its TCP transport carry the data, on one communication thread per process, in issue order.
 * How a failing operation names the rank at fault: native/collective/README.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Collective, CollectiveError, CollectiveFaultKind, defaultHeartbeatMs, DeviceBuffer, RankPlacement, ReduceOp } from './collective';

/** What the addon's Group takes (native/collective/addon.cc). */
export interface GlooGroupOptions extends RankPlacement {
  /** How often each rank tells the store it is alive (default: defaultHeartbeatMs(timeoutMs)). */
  heartbeatMs?: number;
  /** The network interface Gloo's connections use (GLOO_SOCKET_IFNAME; default: the one that reaches masterAddr). */
  iface?: string;
}

interface NativeGroup {
  connect(): Promise<void>;
  allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void>;
  allReduceSync(data: Float32Array | Float64Array, op: ReduceOp): void;
  allReduceBuffers(addresses: number[], counts: number[], op: ReduceOp): Promise<void>;
  broadcast(data: Uint8Array, root: number): Promise<void>;
  barrier(): Promise<void>;
  close(): void;
}

interface GlooAddon {
  Group: new (options: GlooGroupOptions) => NativeGroup;
  info: { library: string; transport: string; glooVersion: string };
}

export interface GlooStatus {
  /** The addon file exists. */
  built: boolean;
  /** It loaded (libgloo found at run time). */
  available: boolean;
  /** Why it is not available ('' when it is). */
  reason: string;
  addonPath: string;
  glooVersion?: string;
}

// dist/src/core/distributed/gloo.js and src/core/distributed/gloo.ts both sit four levels below the package root.
const packageRoot = path.resolve(__dirname, '..', '..', '..', '..');

/** Where the addon is looked for: DALLE_COLLECTIVE_ADDON, else build/Release/dalle_collective.node in the package. */
export function glooAddonPath(): string {
  return process.env.DALLE_COLLECTIVE_ADDON
    ? path.resolve(process.env.DALLE_COLLECTIVE_ADDON)
    : path.join(packageRoot, 'build', 'Release', 'dalle_collective.node');
}

let loaded: { addon: GlooAddon | null; status: GlooStatus } | undefined;

function probe(): { addon: GlooAddon | null; status: GlooStatus } {
  const addonPath = glooAddonPath();
  const status: GlooStatus = { built: false, available: false, reason: '', addonPath };
  if (!fs.existsSync(addonPath)) {
    let report: { built?: boolean; reason?: string } | null = null;
    try {
      report = JSON.parse(fs.readFileSync(path.join(path.dirname(addonPath), 'dalle_collective.json'), 'utf8'));
    } catch {
      report = null;
    }
    status.reason = report && report.built === false && typeof report.reason === 'string'
      ? `the Gloo addon was not built (${report.reason})`
      : `the Gloo addon is not built (no ${addonPath}; install libgloo-dev and run \`npm run install\`)`;
    return { addon: null, status };
  }
  status.built = true;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const addon = require(addonPath) as GlooAddon;
    status.available = true;
    status.glooVersion = addon.info.glooVersion;
    return { addon, status };
  } catch (err) {
    status.reason = `the Gloo addon ${addonPath} did not load: ${(err as Error).message}`;
    return { addon: null, status };
  }
}

/** Whether Gloo can be used here, and why not (loads the addon once). */
export function glooStatus(): GlooStatus {
  loaded ??= probe();
  return loaded.status;
}

function glooAddon(): GlooAddon {
  loaded ??= probe();
  if (!loaded.addon) {
    throw new CollectiveError(
      `dalle: data-parallel training on the CPU needs the Gloo collective addon: ${loaded.status.reason}`,
      'install Gloo (Debian/Ubuntu: apt install libgloo-dev) and rebuild with `npm run install` ' +
        '(DALLE_COLLECTIVE=1 makes a missing Gloo a build error), or train with one process',
      undefined,
      'unavailable',
    );
  }
  return loaded.addon;
}

const FAULT_KINDS: readonly CollectiveFaultKind[] = [
  'exited', 'silent', 'never-joined', 'left', 'store-gone', 'unknown', 'closed', 'unavailable', 'listen', 'usage',
];

/** What to do about each kind of fault; `rank` is the rank at fault when known (shared with nccl.ts). */
export function hintFor(kind: CollectiveFaultKind | undefined, rank: number | undefined): string {
  const r = rank === undefined ? 'the rank named' : `rank ${rank}`;
  switch (kind) {
    case 'exited':
      return `${r}'s own output says why it ended (out of memory, a signal, an error); start every rank again ` +
        '(training resumes from the last checkpoint)';
    case 'silent':
      return `${r} is stopped (SIGSTOP, a debugger), hung, swapping, or its machine is unreachable; raise ` +
        'runtime.dist_timeout_s if it is only slow';
    case 'never-joined':
      return 'start the ranks that never joined (every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE), or raise ' +
        'runtime.dist_timeout_s if it starts late';
    case 'store-gone':
      return "rank 0 serves the rendezvous store: see rank 0's output, and check that MASTER_ADDR:MASTER_PORT reaches " +
        "rank 0's machine from this one (firewall, wrong address)";
    case 'left':
      return `${r} closed its collective before the others (it finished or stopped on its own): see its output`;
    case 'unknown':
      return 'every rank must issue the same collective operations in the same order; raise runtime.dist_timeout_s ' +
        'if a rank is only slow';
    case 'listen':
      return 'MASTER_PORT is taken or MASTER_ADDR is not an address of rank 0\'s machine: pick a free port';
    case 'closed':
      return 'the collective was closed by this process before the operation ran';
    default:
      return 'this is a bug in the caller: see the message';
  }
}

/** The addon's Error (message, kind, faultyRank) as a CollectiveError (shared with nccl.ts). */
export function asCollectiveError(err: unknown): CollectiveError {
  if (err instanceof CollectiveError) return err;
  const e = err as Error & { kind?: string; faultyRank?: number };
  const kind = FAULT_KINDS.includes(e.kind as CollectiveFaultKind) ? (e.kind as CollectiveFaultKind) : undefined;
  const rank = typeof e.faultyRank === 'number' ? e.faultyRank : undefined;
  const message = String(e?.message ?? err);
  return new CollectiveError(message.startsWith('dalle:') ? message : `dalle: ${message}`, hintFor(kind, rank), rank, kind);
}

/** The addon's Promise, its rejection as a CollectiveError. */
async function settled(operation: Promise<void>): Promise<void> {
  try {
    await operation;
  } catch (err) {
    throw asCollectiveError(err);
  }
}

const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'max', 'min'];

function checkReduceOp(op: ReduceOp): void {
  if (!REDUCE_OPS.includes(op)) throw new CollectiveError(`dalle: unknown reduction '${op}' (sum, max or min)`, hintFor('usage', undefined), undefined, 'usage');
}

export class GlooCollective implements Collective {
  readonly backend = 'gloo' as const;
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  bytesReduced = 0;
  private closed = false;

  private constructor(private readonly group: NativeGroup, options: GlooGroupOptions) {
    this.rank = options.rank;
    this.worldSize = options.worldSize;
    this.localRank = options.localRank;
  }

  /**
   * Joins the group: rank 0 starts the store at once (an unusable address or a taken port fails here), then every rank
   * waits for all the others, up to timeoutMs. Rejects naming the ranks that never joined, or rank 0 when no store
   * answers.
   */
  static async open(options: GlooGroupOptions): Promise<GlooCollective> {
    const addon = glooAddon();
    const heartbeatMs = options.heartbeatMs ?? defaultHeartbeatMs(options.timeoutMs);
    const full = { ...options, heartbeatMs };
    let group: NativeGroup;
    try {
      group = new addon.Group(full);
    } catch (err) {
      throw asCollectiveError(err);
    }
    try {
      await group.connect();
    } catch (err) {
      group.close();
      throw asCollectiveError(err);
    }
    return new GlooCollective(group, full);
  }

  async allReduce(data: Float32Array | Float64Array, op: ReduceOp): Promise<void> {
    checkReduceOp(op);
    this.bytesReduced += data.byteLength;
    await settled(this.group.allReduce(data, op));
  }

  allReduceSync(data: Float32Array | Float64Array, op: ReduceOp): void {
    checkReduceOp(op);
    this.bytesReduced += data.byteLength;
    try {
      this.group.allReduceSync(data, op);
    } catch (err) {
      throw asCollectiveError(err);
    }
  }

  async allReduceBuffers(buffers: readonly DeviceBuffer[], op: ReduceOp): Promise<void> {
    checkReduceOp(op);
    const addresses = buffers.map((b) => b.address);
    const counts = buffers.map((b) => b.count);
    for (const n of counts) this.bytesReduced += 4 * n;
    await settled(this.group.allReduceBuffers(addresses, counts, op));
  }

  async broadcast(data: Uint8Array, root: number): Promise<void> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new CollectiveError(`dalle: broadcast root ${root} is not a rank of 0 .. ${this.worldSize - 1}`, hintFor('usage', undefined), undefined, 'usage');
    }
    await settled(this.group.broadcast(data, root));
  }

  async barrier(): Promise<void> {
    await settled(this.group.barrier());
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.group.close();
  }
}
