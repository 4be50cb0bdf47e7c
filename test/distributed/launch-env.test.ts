/** Which process of a data-parallel run this is, from each launcher's variables (launch-env.ts), and Slurm hostlists. */
import assert from 'node:assert/strict';
import { decorateKnownError, exitCodeOf } from '../../src/cli/exit-codes';
import {
  DEFAULT_MASTER_PORT,
  LaunchEnv,
  LaunchEnvError,
  resolveLaunch,
  SINGLE_PROCESS,
  SLURM_PORT_BASE,
  SLURM_PORT_SPAN,
} from '../../src/core/distributed/launch-env';
import { expandHostlist, firstHost, HostlistError, MAX_HOSTLIST_CHARS } from '../../src/core/distributed/slurm-hostlist';

/** What resolveLaunch makes of `env`, without the `origin` text (checked where it matters). */
function launchOf(env: NodeJS.ProcessEnv): Omit<LaunchEnv, 'origin'> {
  const { origin: _origin, ...rest } = resolveLaunch(env);
  return rest;
}

/** resolveLaunch(env) throws a LaunchEnvError whose message matches `message`, with a hint. */
function refuses(env: NodeJS.ProcessEnv, message: RegExp): void {
  assert.throws(
    () => resolveLaunch(env),
    (error: unknown) => {
      assert.ok(error instanceof LaunchEnvError, String(error));
      assert.equal(error.name, 'LaunchEnvError');
      assert.match(error.message, message);
      assert.ok(error.hint.length > 10, `a hint for ${error.message}`);
      return true;
    },
    JSON.stringify(env),
  );
}

const TORCHRUN = { RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'node-a', MASTER_PORT: '29400' };
const SLURM = { SLURM_NTASKS: '8', SLURM_PROCID: '5', SLURM_LOCALID: '1', SLURM_JOB_ID: '1234567', SLURM_JOB_NODELIST: 'gpu-a[07-08],gpu-b1' };
const KUBERNETES = { JOB_COMPLETION_INDEX: '2', WORLD_SIZE: '4', MASTER_ADDR: 'train-prior-0.train-prior' };

describe('distributed: the launch environment', () => {
  it('nothing set (or one srun task, or a stray MASTER_ADDR) is a single process', () => {
    assert.deepEqual(resolveLaunch({}), SINGLE_PROCESS);
    assert.deepEqual(resolveLaunch({ SLURM_NTASKS: '1', SLURM_PROCID: '0', SLURM_LOCALID: '0', SLURM_JOB_ID: '9' }), SINGLE_PROCESS);
    assert.deepEqual(resolveLaunch({ MASTER_ADDR: 'somewhere', MASTER_PORT: '1234', SLURM_ARRAY_TASK_ID: '3' }), SINGLE_PROCESS);
    assert.deepEqual(resolveLaunch({ RANK: '', WORLD_SIZE: ' ' }), SINGLE_PROCESS, 'blank is unset');
  });

  it('torchrun-style variables', () => {
    assert.deepEqual(launchOf(TORCHRUN), { source: 'torchrun', rank: 3, worldSize: 8, localRank: 1, localWorldSize: 2, masterAddr: 'node-a', masterPort: 29400 });
    const { LOCAL_WORLD_SIZE: _lws, ...withoutLocalWorld } = TORCHRUN;
    assert.equal(resolveLaunch(withoutLocalWorld).localWorldSize, undefined);
    // a world of one needs no master and may leave out LOCAL_RANK
    assert.deepEqual(launchOf({ RANK: '0', WORLD_SIZE: '1' }), { source: 'torchrun', rank: 0, worldSize: 1, localRank: 0, localWorldSize: undefined, masterAddr: '127.0.0.1', masterPort: 0 });
    assert.equal(resolveLaunch({ ...TORCHRUN, MASTER_ADDR: '[fe80::1%eth0]' }).masterAddr, '[fe80::1%eth0]');
    assert.equal(resolveLaunch({ ...TORCHRUN, RANK: ' 3 ' }).rank, 3, 'spaces around a number are trimmed');
    assert.equal(resolveLaunch(TORCHRUN).origin, 'RANK=3, WORLD_SIZE=8');
  });

  it('DALLE_LAUNCH=1 with the same variables is dalle launch', () => {
    const launched = resolveLaunch({ ...TORCHRUN, DALLE_LAUNCH: '1' });
    assert.equal(launched.source, 'dalle-launch');
    assert.equal(launched.rank, 3);
  });

  it('torchrun-style variables win over Slurm and Kubernetes (torchrun or dalle launch inside a step or a pod)', () => {
    assert.equal(resolveLaunch({ ...SLURM, ...KUBERNETES, ...TORCHRUN }).source, 'torchrun');
  });

  it('Slurm: SLURM_PROCID / NTASKS / LOCALID, the first node as master, a port from the job id', () => {
    assert.deepEqual(launchOf(SLURM), {
      source: 'slurm',
      rank: 5,
      worldSize: 8,
      localRank: 1,
      localWorldSize: undefined,
      masterAddr: 'gpu-a07',
      masterPort: SLURM_PORT_BASE + (1234567 % SLURM_PORT_SPAN),
    });
    assert.equal(SLURM_PORT_BASE + (1234567 % SLURM_PORT_SPAN), 24567);
    assert.equal(resolveLaunch(SLURM).origin, 'SLURM_PROCID=5, SLURM_NTASKS=8');
    assert.equal(resolveLaunch({ ...SLURM, SLURM_NTASKS_PER_NODE: '4' }).localWorldSize, 4);
    assert.equal(resolveLaunch({ ...SLURM, MASTER_PORT: '31000' }).masterPort, 31000);
    assert.equal(resolveLaunch({ ...SLURM, MASTER_ADDR: '10.0.0.7' }).masterAddr, '10.0.0.7');
    assert.equal(resolveLaunch({ ...SLURM, WORLD_SIZE: '8' }).worldSize, 8, 'an agreeing WORLD_SIZE is fine');
    // the step's node list first (task 0 runs on the step's first node), then the job's, then SLURM_NODELIST
    assert.equal(resolveLaunch({ ...SLURM, SLURM_STEP_NODELIST: 'gpu-b[3-4]' }).masterAddr, 'gpu-b3');
    const { SLURM_JOB_NODELIST: _list, ...withoutJobList } = SLURM;
    assert.equal(resolveLaunch({ ...withoutJobList, SLURM_NODELIST: 'cn[0100-0101]' }).masterAddr, 'cn0100');
    // every task of the job gets the same master and port
    const ranks = [0, 1, 7].map((rank) => resolveLaunch({ ...SLURM, SLURM_PROCID: String(rank) }));
    assert.equal(new Set(ranks.map((r) => `${r.masterAddr}:${r.masterPort}`)).size, 1);
  });

  it('Kubernetes Indexed Job: JOB_COMPLETION_INDEX, WORLD_SIZE or DALLE_WORLD_SIZE, MASTER_ADDR', () => {
    assert.deepEqual(launchOf(KUBERNETES), {
      source: 'kubernetes',
      rank: 2,
      worldSize: 4,
      localRank: 0,
      localWorldSize: 1,
      masterAddr: 'train-prior-0.train-prior',
      masterPort: DEFAULT_MASTER_PORT,
    });
    const { WORLD_SIZE: _ws, ...withoutWorld } = KUBERNETES;
    assert.equal(resolveLaunch({ ...withoutWorld, DALLE_WORLD_SIZE: '4' }).worldSize, 4);
    assert.equal(resolveLaunch({ ...KUBERNETES, DALLE_WORLD_SIZE: '4', MASTER_PORT: '23456' }).masterPort, 23456);
    assert.equal(resolveLaunch({ JOB_COMPLETION_INDEX: '0', WORLD_SIZE: '1' }).worldSize, 1, 'one pod needs no master');
    assert.equal(resolveLaunch(KUBERNETES).origin, 'JOB_COMPLETION_INDEX=2');
  });

  it('partial torchrun-style sets are refused, naming what is missing', () => {
    refuses({ RANK: '1' }, /^RANK=1 is set but WORLD_SIZE is not$/);
    refuses({ WORLD_SIZE: '4' }, /^WORLD_SIZE is set but RANK is not/);
    refuses({ LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '2' }, /^LOCAL_RANK, LOCAL_WORLD_SIZE are set but RANK is not/);
    refuses({ DALLE_WORLD_SIZE: '2' }, /^DALLE_WORLD_SIZE is set but RANK is not/);
    const { LOCAL_RANK: _lr, ...withoutLocalRank } = TORCHRUN;
    refuses(withoutLocalRank, /^RANK=3, WORLD_SIZE=8 is set but LOCAL_RANK is not$/);
    const { MASTER_ADDR: _ma, ...withoutAddr } = TORCHRUN;
    refuses(withoutAddr, /but MASTER_ADDR is not$/);
    const { MASTER_PORT: _mp, ...withoutPort } = TORCHRUN;
    refuses(withoutPort, /but MASTER_PORT is not$/);
    refuses({ RANK: '0', WORLD_SIZE: '2', LOCAL_RANK: '0' }, /but MASTER_ADDR and MASTER_PORT are not$/);
  });

  it('inconsistent or malformed torchrun-style values are refused', () => {
    refuses({ ...TORCHRUN, RANK: '8' }, /^RANK=8 is not in 0\.\.7 \(WORLD_SIZE=8\)$/);
    refuses({ ...TORCHRUN, WORLD_SIZE: '0', RANK: '0' }, /^WORLD_SIZE=0 is not in 1\.\.65536$/);
    refuses({ ...TORCHRUN, WORLD_SIZE: '65537' }, /^WORLD_SIZE=65537 is not in 1\.\.65536$/);
    refuses({ ...TORCHRUN, LOCAL_RANK: '2' }, /^LOCAL_RANK=2 is not in 0\.\.1 \(LOCAL_WORLD_SIZE=2\)$/);
    refuses({ ...TORCHRUN, LOCAL_WORLD_SIZE: '9' }, /^LOCAL_WORLD_SIZE=9 is not in 1\.\.8/);
    refuses({ ...TORCHRUN, LOCAL_WORLD_SIZE: '0' }, /^LOCAL_WORLD_SIZE=0 is not in 1\.\.8/);
    refuses({ ...TORCHRUN, RANK: '-1' }, /^RANK="-1" is not a non-negative integer$/);
    refuses({ ...TORCHRUN, RANK: '1e3' }, /^RANK="1e3" is not a non-negative integer$/);
    refuses({ ...TORCHRUN, RANK: '99999999999999999999' }, /^RANK="99999999999999999999" is too large$/);
    refuses({ ...TORCHRUN, RANK: 'x'.repeat(10_000) }, /^RANK="x{40}\.\.\." is not a non-negative integer$/);
    refuses({ ...TORCHRUN, MASTER_PORT: '0' }, /^MASTER_PORT=0 is not a port \(1\.\.65535\)$/);
    refuses({ ...TORCHRUN, MASTER_PORT: '65536' }, /^MASTER_PORT=65536 is not a port/);
    refuses({ ...TORCHRUN, MASTER_PORT: 'http' }, /^MASTER_PORT="http" is not a non-negative integer$/);
    refuses({ ...TORCHRUN, MASTER_ADDR: 'node a' }, /^MASTER_ADDR="node a" is not a host name or an IP address$/);
    refuses({ ...TORCHRUN, MASTER_ADDR: 'a;reboot' }, /is not a host name or an IP address$/);
    refuses({ ...TORCHRUN, MASTER_ADDR: 'a'.repeat(300) }, /is not a host name or an IP address$/);
    refuses({ RANK: '0', WORLD_SIZE: '1', MASTER_PORT: '99999' }, /^MASTER_PORT=99999 is not a port/);
  });

  it('DALLE_LAUNCH is only ever 1, and only with every variable dalle launch sets', () => {
    refuses({ ...TORCHRUN, DALLE_LAUNCH: 'yes' }, /^DALLE_LAUNCH="yes": only `dalle launch` sets it, to 1$/);
    refuses({ DALLE_LAUNCH: '1' }, /^DALLE_LAUNCH=1 is set but RANK and WORLD_SIZE are not/);
    const { LOCAL_WORLD_SIZE: _lws, ...partial } = TORCHRUN;
    refuses({ ...partial, DALLE_LAUNCH: '1' }, /is set but LOCAL_WORLD_SIZE is not \(`dalle launch` sets it\)$/);
  });

  it('Slurm sets that are partial or inconsistent are refused', () => {
    const without = (name: keyof typeof SLURM): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(SLURM).filter(([key]) => key !== name));
    refuses(without('SLURM_PROCID'), /^SLURM_NTASKS=8 but SLURM_PROCID is not set: this is not a task that srun started$/);
    refuses(without('SLURM_LOCALID'), /but SLURM_LOCALID is not set/);
    refuses({ ...SLURM, SLURM_PROCID: '8' }, /^SLURM_PROCID=8 is not in 0\.\.7 \(SLURM_NTASKS=8\)$/);
    refuses({ ...SLURM, WORLD_SIZE: '4' }, /^WORLD_SIZE=4 disagrees with SLURM_NTASKS=8$/);
    refuses({ ...SLURM, SLURM_NTASKS_PER_NODE: '1' }, /^SLURM_LOCALID=1 is not in 0\.\.0 \(SLURM_NTASKS_PER_NODE=1\)$/);
    refuses({ ...SLURM, SLURM_NTASKS: '100000' }, /^SLURM_NTASKS=100000 is not in 1\.\.65536$/);
    refuses(without('SLURM_JOB_NODELIST'), /none of SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, SLURM_NODELIST or MASTER_ADDR is set$/);
    refuses({ ...SLURM, SLURM_JOB_NODELIST: 'gpu[1-' }, /^SLURM_JOB_NODELIST: '\[' at column 4 of "gpu\[1-" is never closed$/);
    refuses(without('SLURM_JOB_ID'), /neither MASTER_PORT nor SLURM_JOB_ID is set$/);
    refuses({ ...SLURM, SLURM_JOB_ID: 'abc' }, /^SLURM_JOB_ID="abc" is not a non-negative integer$/);
  });

  it('Kubernetes sets that are partial or inconsistent are refused', () => {
    refuses({ JOB_COMPLETION_INDEX: '1' }, /^JOB_COMPLETION_INDEX=1 is set \(a Kubernetes Indexed Job\) but WORLD_SIZE is not: Kubernetes sets no count$/);
    refuses({ ...KUBERNETES, DALLE_WORLD_SIZE: '3' }, /^JOB_COMPLETION_INDEX=2: WORLD_SIZE=4 and DALLE_WORLD_SIZE=3 disagree$/);
    const { MASTER_ADDR: _ma, ...withoutAddr } = KUBERNETES;
    refuses(withoutAddr, /^JOB_COMPLETION_INDEX=2, world size 4, but MASTER_ADDR is not set$/);
    refuses({ ...KUBERNETES, JOB_COMPLETION_INDEX: '4' }, /^JOB_COMPLETION_INDEX=4 is not in 0\.\.3 \(WORLD_SIZE=4\)$/);
    refuses({ ...KUBERNETES, JOB_COMPLETION_INDEX: 'zero' }, /^JOB_COMPLETION_INDEX="zero" is not a non-negative integer$/);
  });

  it('a LaunchEnvError is a config problem: exit code 3, its hint as the suggestion', () => {
    const error = decorateKnownError(new LaunchEnvError('RANK=1 is set but WORLD_SIZE is not', 'set WORLD_SIZE')) as Error & { suggestions?: string[] };
    assert.equal(exitCodeOf(error), 3);
    assert.deepEqual(error.suggestions, ['set WORLD_SIZE']);
  });
});

describe('distributed: Slurm hostlists', () => {
  it('expands ranges and lists, keeping zero padding, with commas inside and between brackets', () => {
    assert.deepEqual(expandHostlist('node[01-04,07],gpu-a[1-2]'), ['node01', 'node02', 'node03', 'node04', 'node07', 'gpu-a1', 'gpu-a2']);
    assert.deepEqual(expandHostlist('n[8-10]'), ['n8', 'n9', 'n10']);
    assert.deepEqual(expandHostlist('n[08-10]'), ['n08', 'n09', 'n10']);
    assert.deepEqual(expandHostlist('n[098-101]'), ['n098', 'n099', 'n100', 'n101']);
    assert.deepEqual(expandHostlist('n[001-3]'), ['n001', 'n002', 'n003'], 'the lower bound sets the width');
    assert.deepEqual(expandHostlist('n[9-010]'), ['n9', 'n10']);
    assert.deepEqual(expandHostlist('single'), ['single']);
    assert.deepEqual(expandHostlist('a,b.cluster.org,c-d_e'), ['a', 'b.cluster.org', 'c-d_e']);
    assert.deepEqual(expandHostlist('n[7]'), ['n7']);
    assert.deepEqual(expandHostlist('n[3,1]'), ['n3', 'n1'], 'the order written');
    assert.deepEqual(expandHostlist('[1-2]'), ['1', '2'], 'a bracket group alone');
  });

  it('keeps text after a group, and expands several groups as a product (the leftmost slowest)', () => {
    assert.deepEqual(expandHostlist('rack[1-2]-ib'), ['rack1-ib', 'rack2-ib']);
    assert.deepEqual(expandHostlist('r[1-2]n[01-02]'), ['r1n01', 'r1n02', 'r2n01', 'r2n02']);
    assert.deepEqual(expandHostlist('a[1,3]b[5]c,d'), ['a1b5c', 'a3b5c', 'd']);
  });

  it('the first host without expanding; expansions are bounded before they start', () => {
    assert.equal(firstHost('node[01-04,07],gpu-a[1-2]'), 'node01');
    assert.equal(firstHost('r[2-3]n[010-999999999]'), 'r2n010');
    assert.equal(firstHost('plain,other'), 'plain');
    assert.throws(() => expandHostlist('n[0-999999999]'), (e: unknown) => e instanceof HostlistError && /names more than 1000000 hosts/.test(e.message));
    assert.throws(() => expandHostlist('n[1-5]', 4), /names more than 4 hosts/);
    assert.throws(() => expandHostlist('a,b,c', 2), /names more than 2 hosts/);
    assert.equal(expandHostlist('n[1-4]', 4).length, 4);
  });

  it('refuses what Slurm does not write, naming the column', () => {
    const cases: [string, RegExp][] = [
      ['', /^hostlist is empty$/],
      ['node[', /^'\[' at column 5 of "node\[" is never closed$/],
      ['node[1-2', /is never closed/],
      ['node[]', /^empty brackets in the brackets at column 5/],
      ['node[1-]', /^"1-" in the brackets at column 5 of "node\[1-\]" is not a number or a range N-M$/],
      ['node[-3]', /is not a number or a range/],
      ['node[a]', /is not a number or a range/],
      ['node[1-2:2]', /is not a number or a range/],
      ['node[1,,2]', /^"" in the brackets/],
      ['node[3-1]', /^range "3-1" in the brackets at column 5 of "node\[3-1\]" descends$/],
      ['n[1[2]]', /is not a number or a range/],
      ['n]', /^unexpected "\]" at column 2 of "n\]"$/],
      ['a,,b', /^empty host name at column 3 of "a,,b"$/],
      [',a', /^empty host name at column 1/],
      ['a,', /^empty host name at column 3/],
      ['no de', /^unexpected " " at column 3/],
      ['n[1234567890]', /has a bound of more than 9 digits/],
      ['x'.repeat(MAX_HOSTLIST_CHARS + 1), /^hostlist is 65537 characters long, more than 65536$/],
    ];
    for (const [text, message] of cases) {
      assert.throws(() => expandHostlist(text), (e: unknown) => e instanceof HostlistError && message.test(e.message), JSON.stringify(text.slice(0, 20)));
      assert.throws(() => firstHost(text), HostlistError, 'firstHost checks the whole list too');
    }
  });
});
