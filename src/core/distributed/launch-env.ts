/**
 * Which process of a data-parallel run this is, read from the environment its launcher gave it. In this order:
 *
 *   torchrun-style  RANK and WORLD_SIZE (both, or neither), LOCAL_RANK (may be left out only when WORLD_SIZE is 1),
 *                   LOCAL_WORLD_SIZE (optional), MASTER_ADDR and MASTER_PORT (required when WORLD_SIZE > 1).
 *                   With DALLE_LAUNCH=1 as well, the source is 'dalle-launch' (`dalle launch` sets all six).
 *                   These win over Slurm and Kubernetes, so torchrun or `dalle launch` inside a Slurm step or a pod
 *                   describes its own processes.
 *   Slurm           only when SLURM_NTASKS > 1 (one srun task is a single process): rank SLURM_PROCID, world
 *                   SLURM_NTASKS, local rank SLURM_LOCALID, local world SLURM_NTASKS_PER_NODE when set. The master is
 *                   MASTER_ADDR when set, else the first host of SLURM_STEP_NODELIST, SLURM_JOB_NODELIST or
 *                   SLURM_NODELIST (the first set; task 0 runs on the step's first node under Slurm's default block
 *                   distribution); its port is MASTER_PORT when set, else SLURM_PORT_BASE + SLURM_JOB_ID mod
 *                   SLURM_PORT_SPAN (20000..29999: below Linux's ephemeral ports, the same on every task of the job).
 *                   Start the trainer with srun: in the batch script itself SLURM_NTASKS is the job's task count but
 *                   only one process runs, and the rendezvous waits for the others until runtime.dist_timeout_s.
 *   Kubernetes      an Indexed Job (completionMode: Indexed), one process per pod: rank JOB_COMPLETION_INDEX; world
 *                   WORLD_SIZE or DALLE_WORLD_SIZE (= spec.completions; Kubernetes sets no count); MASTER_ADDR
 *                   required, the stable name of pod 0 through a headless Service, `<job>-0.<service>` (the Job's
 *                   pod template sets `subdomain: <service>`); MASTER_PORT, else DEFAULT_MASTER_PORT.
 *   single          none of these: rank 0 of 1.
 *
 * Every partial or inconsistent set (RANK without WORLD_SIZE, a rank outside the world, WORLD_SIZE disagreeing with
 * SLURM_NTASKS, a distributed run without a master, ...) is a LaunchEnvError saying what is missing and what to set;
 * nothing is guessed. The CLI maps LaunchEnvError to exit code 3 (src/cli/exit-codes.ts).
 */
import { envNonNegativeInt, envText, KUBERNETES_INDEX_VAR, quoteEnvValue } from '../job-env';
import { firstHost, HostlistError } from './slurm-hostlist';

export type LaunchSource = 'single' | 'dalle-launch' | 'torchrun' | 'slurm' | 'kubernetes';

export interface LaunchEnv {
  readonly source: LaunchSource;
  /** 0 .. worldSize - 1; rank 0 writes the run's files. */
  readonly rank: number;
  readonly worldSize: number;
  /** This process's index on its machine (picks cuda:localRank). */
  readonly localRank: number;
  /** Processes on this machine, when the launcher says. */
  readonly localWorldSize?: number;
  /** Where rank 0 listens for the rendezvous: a host name or an IP address ('127.0.0.1' for a single process). */
  readonly masterAddr: string;
  /** Its port, 1..65535 (0 for a single process: nothing to meet). */
  readonly masterPort: number;
  /** The variables it came from, for messages: "SLURM_PROCID=2, SLURM_NTASKS=8". */
  readonly origin: string;
}

/** The launch environment is partial or inconsistent; `hint` says what to set. Exit code 3. */
export class LaunchEnvError extends Error {
  override readonly name = 'LaunchEnvError';

  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

/** Most processes one run may have (a bound on WORLD_SIZE and SLURM_NTASKS, far above any cluster's GPU count). */
export const MAX_WORLD_SIZE = 65_536;
/** The rendezvous port of a Kubernetes Indexed Job without MASTER_PORT (torchrun's default). */
export const DEFAULT_MASTER_PORT = 29_500;
export const SLURM_PORT_BASE = 20_000;
export const SLURM_PORT_SPAN = 10_000;
/** Longest MASTER_ADDR: a DNS name (253) with room for an IPv6 address and zone. */
const MAX_ADDR_CHARS = 253;

export const SINGLE_PROCESS: LaunchEnv = { source: 'single', rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, masterAddr: '127.0.0.1', masterPort: 0, origin: 'no launcher variables' };

const GENERIC_HINT =
  'set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT together (torchrun-style), start the trainer with ' +
  '`srun` in a Slurm job, or `dalle launch --nproc N -- COMMAND` on one machine; unset them all to train in one process';

/** Which process of which run this is (see the module comment). */
export function resolveLaunch(env: NodeJS.ProcessEnv = process.env): LaunchEnv {
  const read = reader(env);
  const rank = read.int('RANK');
  const worldSize = read.int('WORLD_SIZE');
  const marker = envText(env, 'DALLE_LAUNCH');
  if (marker !== undefined && marker !== '1') {
    throw new LaunchEnvError(`DALLE_LAUNCH=${quoteEnvValue(marker)}: only \`dalle launch\` sets it, to 1`, 'unset DALLE_LAUNCH');
  }
  if (rank !== undefined && worldSize !== undefined) return fromTorchrun(env, rank, worldSize, marker === '1');
  if (rank !== undefined) throw new LaunchEnvError(`RANK=${rank} is set but WORLD_SIZE is not`, `set WORLD_SIZE to the number of processes of the run, or unset RANK; ${GENERIC_HINT}`);
  if (marker !== undefined) {
    throw new LaunchEnvError('DALLE_LAUNCH=1 is set but RANK and WORLD_SIZE are not (`dalle launch` sets all three)', 'unset DALLE_LAUNCH, or start the command with `dalle launch`');
  }
  const slurmTasks = read.int('SLURM_NTASKS');
  if (slurmTasks !== undefined && slurmTasks > 1) return fromSlurm(env, slurmTasks, worldSize);
  if (envText(env, KUBERNETES_INDEX_VAR) !== undefined) return fromKubernetes(env);
  const stray = ['WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'DALLE_WORLD_SIZE'].filter((name) => envText(env, name) !== undefined);
  if (stray.length > 0) {
    throw new LaunchEnvError(`${stray.join(', ')} ${stray.length === 1 ? 'is' : 'are'} set but RANK is not, and this is neither a Slurm step of several tasks nor a Kubernetes Indexed Job`, GENERIC_HINT);
  }
  return SINGLE_PROCESS;
}

function fromTorchrun(env: NodeJS.ProcessEnv, rank: number, worldSize: number, launched: boolean): LaunchEnv {
  const read = reader(env);
  const source = launched ? 'dalle-launch' : 'torchrun';
  const origin = `RANK=${rank}, WORLD_SIZE=${worldSize}${launched ? ' (dalle launch)' : ''}`;
  checkWorld(rank, worldSize, 'RANK', 'WORLD_SIZE');
  const localWorldSize = read.int('LOCAL_WORLD_SIZE');
  const localRank = read.int('LOCAL_RANK') ?? (worldSize === 1 ? 0 : undefined);
  if (localRank === undefined) {
    throw new LaunchEnvError(`${origin} is set but LOCAL_RANK is not`, "set LOCAL_RANK to this process's index on its machine (0 with one process per machine; it picks cuda:LOCAL_RANK)");
  }
  if (launched && localWorldSize === undefined) {
    throw new LaunchEnvError(`${origin} is set but LOCAL_WORLD_SIZE is not (\`dalle launch\` sets it)`, 'start the command with `dalle launch`, or unset DALLE_LAUNCH');
  }
  checkLocal(localRank, localWorldSize, worldSize, 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'WORLD_SIZE');
  const master = worldSize === 1 ? optionalMaster(env) : requiredMaster(env, origin, 'the host of rank 0 (reachable from every process)');
  return { source, rank, worldSize, localRank, localWorldSize, ...master, origin };
}

function fromSlurm(env: NodeJS.ProcessEnv, tasks: number, worldSize: number | undefined): LaunchEnv {
  const read = reader(env);
  const origin = `SLURM_NTASKS=${tasks}`;
  const rank = read.int('SLURM_PROCID');
  const localRank = read.int('SLURM_LOCALID');
  if (rank === undefined || localRank === undefined) {
    throw new LaunchEnvError(
      `${origin} but ${rank === undefined ? 'SLURM_PROCID' : 'SLURM_LOCALID'} is not set: this is not a task that srun started`,
      'start the trainer with `srun dalle ...` inside the job (srun sets SLURM_PROCID and SLURM_LOCALID per task), or set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT yourself',
    );
  }
  checkWorld(rank, tasks, 'SLURM_PROCID', 'SLURM_NTASKS');
  if (worldSize !== undefined && worldSize !== tasks) {
    throw new LaunchEnvError(`WORLD_SIZE=${worldSize} disagrees with SLURM_NTASKS=${tasks}`, 'unset WORLD_SIZE (Slurm gives the task count), or set RANK as well to launch torchrun-style');
  }
  const localWorldSize = read.int('SLURM_NTASKS_PER_NODE');
  checkLocal(localRank, localWorldSize, tasks, 'SLURM_LOCALID', 'SLURM_NTASKS_PER_NODE', 'SLURM_NTASKS');
  const slurmOrigin = `SLURM_PROCID=${rank}, ${origin}`;
  const masterAddr = envText(env, 'MASTER_ADDR') !== undefined ? checkedAddr(env) : slurmMasterHost(env, slurmOrigin);
  let masterPort = checkedPort(env);
  if (masterPort === undefined) {
    const jobId = read.int('SLURM_JOB_ID');
    if (jobId === undefined) throw new LaunchEnvError(`${slurmOrigin} but neither MASTER_PORT nor SLURM_JOB_ID is set`, 'set MASTER_PORT to a free port on the first node (the same on every task)');
    masterPort = SLURM_PORT_BASE + (jobId % SLURM_PORT_SPAN);
  }
  return { source: 'slurm', rank, worldSize: tasks, localRank, localWorldSize, masterAddr, masterPort, origin: slurmOrigin };
}

/** The first host of the step's (or else the job's) node list. */
function slurmMasterHost(env: NodeJS.ProcessEnv, origin: string): string {
  for (const name of ['SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST', 'SLURM_NODELIST']) {
    const list = envText(env, name);
    if (list === undefined) continue;
    try {
      return firstHost(list);
    } catch (error) {
      if (!(error instanceof HostlistError)) throw error;
      throw new LaunchEnvError(`${name}: ${error.message}`, 'set MASTER_ADDR to the first node of the job (`scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1`)');
    }
  }
  throw new LaunchEnvError(`${origin} but none of SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, SLURM_NODELIST or MASTER_ADDR is set`, 'set MASTER_ADDR to the first node of the job (`scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1`)');
}

function fromKubernetes(env: NodeJS.ProcessEnv): LaunchEnv {
  const read = reader(env);
  const rank = read.int(KUBERNETES_INDEX_VAR) as number; // set: resolveLaunch checked
  const origin = `${KUBERNETES_INDEX_VAR}=${rank}`;
  const plain = read.int('WORLD_SIZE');
  const ours = read.int('DALLE_WORLD_SIZE');
  if (plain !== undefined && ours !== undefined && plain !== ours) {
    throw new LaunchEnvError(`${origin}: WORLD_SIZE=${plain} and DALLE_WORLD_SIZE=${ours} disagree`, "set one of them, to the Job's spec.completions");
  }
  const worldSize = plain ?? ours;
  if (worldSize === undefined) {
    throw new LaunchEnvError(
      `${origin} is set (a Kubernetes Indexed Job) but WORLD_SIZE is not: Kubernetes sets no count`,
      "set WORLD_SIZE (or DALLE_WORLD_SIZE) to the Job's spec.completions in the pod's env, and MASTER_ADDR to pod 0's name through a headless Service (<job>-0.<service>)",
    );
  }
  checkWorld(rank, worldSize, KUBERNETES_INDEX_VAR, plain !== undefined ? 'WORLD_SIZE' : 'DALLE_WORLD_SIZE');
  if (worldSize === 1) return { source: 'kubernetes', rank, worldSize, localRank: 0, localWorldSize: 1, ...optionalMaster(env), origin };
  const masterAddr = envText(env, 'MASTER_ADDR') !== undefined ? checkedAddr(env) : undefined;
  if (masterAddr === undefined) {
    throw new LaunchEnvError(
      `${origin}, world size ${worldSize}, but MASTER_ADDR is not set`,
      "set MASTER_ADDR to pod 0's stable name: <job>-0.<service>, where <service> is a headless Service (clusterIP: None) selecting the Job's pods and the pod template sets subdomain: <service>",
    );
  }
  return { source: 'kubernetes', rank, worldSize, localRank: 0, localWorldSize: 1, masterAddr, masterPort: checkedPort(env) ?? DEFAULT_MASTER_PORT, origin };
}

/** Reads integers of `env`, turning a bad value into a LaunchEnvError. */
function reader(env: NodeJS.ProcessEnv): { int(name: string): number | undefined } {
  return {
    int: (name) => envNonNegativeInt(env, name, (problem) => new LaunchEnvError(problem, `set ${name} to a whole number, or unset it`)),
  };
}

function checkWorld(rank: number, worldSize: number, rankName: string, worldName: string): void {
  if (worldSize < 1 || worldSize > MAX_WORLD_SIZE) {
    throw new LaunchEnvError(`${worldName}=${worldSize} is not in 1..${MAX_WORLD_SIZE}`, `set ${worldName} to the number of processes of the run`);
  }
  if (rank >= worldSize) {
    throw new LaunchEnvError(`${rankName}=${rank} is not in 0..${worldSize - 1} (${worldName}=${worldSize})`, `give each process a distinct ${rankName} from 0 to ${worldName} - 1`);
  }
}

function checkLocal(localRank: number, localWorldSize: number | undefined, worldSize: number, rankName: string, localName: string, worldName: string): void {
  if (localWorldSize !== undefined && (localWorldSize < 1 || localWorldSize > worldSize)) {
    throw new LaunchEnvError(`${localName}=${localWorldSize} is not in 1..${worldSize} (${worldName}=${worldSize})`, `set ${localName} to the number of processes on this machine, or unset it`);
  }
  const bound = localWorldSize ?? worldSize;
  if (localRank >= bound) {
    throw new LaunchEnvError(
      `${rankName}=${localRank} is not in 0..${bound - 1} (${localWorldSize !== undefined ? localName : worldName}=${bound})`,
      `set ${rankName} to this process's index among the processes on its machine`,
    );
  }
}

function requiredMaster(env: NodeJS.ProcessEnv, origin: string, what: string): { masterAddr: string; masterPort: number } {
  const missing = ['MASTER_ADDR', 'MASTER_PORT'].filter((name) => envText(env, name) === undefined);
  if (missing.length > 0) {
    throw new LaunchEnvError(`${origin} is set but ${missing.join(' and ')} ${missing.length === 1 ? 'is' : 'are'} not`, `set MASTER_ADDR to ${what} and MASTER_PORT to a free port there, the same on every process`);
  }
  return { masterAddr: checkedAddr(env), masterPort: checkedPort(env) as number };
}

/** A world of one: the master variables are not needed, but checked when given. */
function optionalMaster(env: NodeJS.ProcessEnv): { masterAddr: string; masterPort: number } {
  return {
    masterAddr: envText(env, 'MASTER_ADDR') !== undefined ? checkedAddr(env) : SINGLE_PROCESS.masterAddr,
    masterPort: checkedPort(env) ?? SINGLE_PROCESS.masterPort,
  };
}

/** MASTER_ADDR: a host name, an IPv4 address, or an IPv6 address (brackets and a zone allowed). */
function checkedAddr(env: NodeJS.ProcessEnv): string {
  const text = envText(env, 'MASTER_ADDR') as string;
  if (text.length > MAX_ADDR_CHARS || !/^[A-Za-z0-9._:%[\]-]+$/.test(text)) {
    throw new LaunchEnvError(`MASTER_ADDR=${quoteEnvValue(text)} is not a host name or an IP address`, 'set MASTER_ADDR to the host name or address of the machine of rank 0');
  }
  return text;
}

function checkedPort(env: NodeJS.ProcessEnv): number | undefined {
  const port = reader(env).int('MASTER_PORT');
  if (port !== undefined && (port < 1 || port > 65_535)) {
    throw new LaunchEnvError(`MASTER_PORT=${port} is not a port (1..65535)`, 'set MASTER_PORT to a free TCP port on the machine of rank 0');
  }
  return port;
}
