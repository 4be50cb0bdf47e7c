/**
 * The NCCL backend without a GPU: the CUDA addon's `nccl` functions say why NCCL cannot be used here (no libnccl, no
 * GPU, a DALLE_NCCL_LIB that is not NCCL) without crashing; openCollective refuses CUDA ranks with that reason, and
 * `dalle info` reports it. Then NcclCollective over the addon's real rendezvous store, with a stand-in for NCCL's
 * communicator (fake-nccl.ts), ranks in one process: rank 1 initialises with the id rank 0 published; operations go
 * through in order; a rank that leaves, never joins, or whose initialisation fails is named as the Gloo backend
 * names it. The real communicator runs only on a GPU: test/cuda/nccl-gpu.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { CollectiveError } from '../../src/core/distributed/collective';
import { NCCL_UNIQUE_ID_KEY, NcclCollective, NcclNative, NcclOptions, ncclNative, ncclStatus } from '../../src/core/distributed/nccl';
import { availableCollectives, openCollective } from '../../src/core/distributed/open';
import { FakeNcclWorld } from './fake-nccl';
import { freePort } from './gloo-ranks';

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<CollectiveError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    assert.ok(err instanceof CollectiveError, `not a CollectiveError: ${String(err)}`);
    return err;
  }
  return assert.fail('expected a CollectiveError');
}

/** `nccl.available()` in a fresh node process with DALLE_NCCL_LIB set (the library is loaded once per process). */
function availableWith(lib: string): { ok: boolean; reason: string; library: string } {
  const addonPath = require.resolve(path.resolve(__dirname, '..', '..', 'src', 'core', 'cuda'));
  const script = `const { cudaAddonIfLoaded } = require(${JSON.stringify(addonPath)});
    process.stdout.write(JSON.stringify(cudaAddonIfLoaded().nccl.available()));`;
  const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, DALLE_NCCL_LIB: lib }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('distributed: NCCL availability (no GPU needed)', function () {
  this.timeout(20000);
  const { native, reason } = ncclNative();

  it('the CUDA addon answers whether NCCL can be used, and why not, without crashing', function () {
    if (!native) {
      console.log(`      (skipped: ${reason})`);
      this.skip();
    }
    const a = native.available();
    if (a.ok) {
      assert.match(a.version ?? '', /^2\.\d+\.\d+$/);
      assert.ok(a.deviceCount > 0);
      assert.equal(a.reason, '');
      return;
    }
    assert.ok(a.reason.length > 20, a.reason);
    if (a.deviceCount === 0) assert.match(a.reason, /no usable GPU \(cuda\w+: |no GPU/);
    if (a.version === undefined) {
      assert.match(a.reason, /libnccl\.so\.2|DALLE_NCCL_LIB/);
      assert.throws(() => native.uniqueId(), (err: Error & { kind?: string }) => err.kind === 'unavailable' && /NCCL is not available/.test(err.message));
    }
  });

  it('DALLE_NCCL_LIB names the library: one that does not load, or is not NCCL, is said so', function () {
    if (!native) this.skip();
    const missing = availableWith('/nonexistent/libnccl.so.2');
    assert.equal(missing.ok, false);
    assert.equal(missing.library, '/nonexistent/libnccl.so.2');
    assert.match(missing.reason, /^DALLE_NCCL_LIB=\/nonexistent\/libnccl\.so\.2 did not load \(.*No such file/);
    const notNccl = availableWith('libm.so.6');
    assert.equal(notNccl.ok, false);
    assert.match(notNccl.reason, /^libm\.so\.6 is not usable: it has no symbol ncclGetVersion/);
  });

  it('openCollective refuses CUDA ranks where NCCL cannot be used, giving the reason, before any network', async function () {
    const status = ncclStatus();
    if (status.available) this.skip(); // then it would join a group: test/cuda/nccl-gpu.test.ts does
    const started = Date.now();
    const err = await rejection(openCollective({
      rank: 1, worldSize: 2, localRank: 1, masterAddr: '127.0.0.1', masterPort: 1, timeoutMs: 60000, device: 'cuda:1',
    }));
    assert.equal(err.kind, 'unavailable');
    assert.equal(err.message, `dalle: data-parallel training on cuda:1 needs NCCL: ${status.reason}`);
    assert.match(err.hint, /DALLE_NCCL_LIB/);
    assert.match(err.hint, /--device cpu/);
    assert.ok(Date.now() - started < 1000);
    const list = availableCollectives();
    assert.deepEqual(list.find((c) => c.backend === 'nccl'), { backend: 'nccl', available: false, detail: status.reason });
  });
});

describe('distributed: NcclCollective over the rendezvous store, NCCL stood in for (no GPU needed)', function () {
  this.timeout(20000);
  const { native } = ncclNative();
  const open: NcclCollective[] = [];

  beforeEach(function () {
    if (!native) {
      console.log('      (skipped: the CUDA addon with NCCL functions is not built here)');
      this.skip();
    }
  });
  afterEach(() => open.splice(0).forEach((c) => c.close()));

  const options = (rank: number, worldSize: number, port: number, timeoutMs = 3000): NcclOptions => ({
    rank, worldSize, localRank: rank, masterAddr: '127.0.0.1', masterPort: port, timeoutMs, device: rank, heartbeatMs: 100,
  });

  async function group(world: FakeNcclWorld, port: number): Promise<NcclCollective[]> {
    const fake = world.native(native as NcclNative);
    const ranks = await Promise.all(Array.from({ length: world.worldSize }, (_, r) => NcclCollective.open(options(r, world.worldSize, port), fake)));
    open.push(...ranks);
    return ranks;
  }

  it("rank 0's unique id reaches every rank through the store; operations go through in order and count their bytes", async () => {
    const world = new FakeNcclWorld(3, 2000);
    const id = Uint8Array.from({ length: 128 }, (_, i) => (i * 37 + 11) & 255);
    world.uniqueId = () => id;
    const ranks = await group(world, await freePort());
    assert.deepEqual(ranks.map((c) => [c.backend, c.rank, c.worldSize, c.device]), [['nccl', 0, 3, 0], ['nccl', 1, 3, 1], ['nccl', 2, 3, 2]]);
    for (let r = 0; r < 3; r++) assert.deepEqual(world.ids[r], id, `rank ${r} initialised with another id`);

    const data = [new Float64Array([1, -5]), new Float64Array([2, 7]), new Float64Array([-4, 0.5])];
    await Promise.all(ranks.map((c, r) => c.allReduce(data[r], 'max')));
    assert.deepEqual(data.map((d) => Array.from(d)), [[2, 7], [2, 7], [2, 7]]);
    const bytes = ranks.map((c, r) => Uint8Array.of(r, r, r));
    await Promise.all(ranks.map((c, r) => c.broadcast(bytes[r], 2)));
    assert.deepEqual(bytes.map((b) => Array.from(b)), [[2, 2, 2], [2, 2, 2], [2, 2, 2]]);
    await Promise.all(ranks.map((c) => c.barrier()));
    const buffers = [{ address: 4096, count: 10 }, { address: 1 << 20, count: 0 }, { address: 8192, count: 3 }];
    await Promise.all(ranks.map((c) => c.allReduceBuffers(buffers, 'sum')));
    assert.deepEqual(world.bufferCalls[1], [{ addresses: [4096, 1 << 20, 8192], counts: [10, 0, 3], op: 'sum' }]);
    assert.deepEqual(ranks.map((c) => c.bytesReduced), [16 + 52, 16 + 52, 16 + 52], 'payload of reductions only (not the barrier, not the broadcast)');
    assert.equal((await rejection(ranks[0].broadcast(new Uint8Array(1), 3))).kind, 'usage');
    assert.equal((await rejection(ranks[0].allReduce(new Float32Array(1), 'mean' as 'sum'))).kind, 'usage');
  });

  it('a rank that closes is named by the one whose operation then times out; later operations fail as its consequence', async () => {
    const world = new FakeNcclWorld(2, 400);
    const [rank0, rank1] = await group(world, await freePort());
    rank1.close();
    await new Promise((r) => setTimeout(r, 100)); // its Goodbye reaches the store
    const first = rank0.allReduce(new Float32Array(10), 'sum');
    const second = rank0.barrier(); // in flight too, failed with the first
    const err = await rejection(first);
    assert.equal(err.kind, 'left');
    assert.equal(err.faultyRank, 1);
    assert.match(err.message, /^dalle: rank 1 \(host [^,]+, pid \d+\) left the group \(it closed its collective\): allReduce #1 \(sum, 10 f32\) failed \(it did not complete within 0\.4 s\)/);
    assert.match(err.hint, /rank 1 closed its collective/);
    const after = await rejection(second);
    assert.equal(after.kind, 'left');
    assert.equal(after.message, `dalle: the group is unusable after an earlier failure: ${err.message.slice(7)}`);
    const started = Date.now();
    const sync = (() => {
      try {
        rank0.allReduceSync(new Float64Array(1), 'min');
      } catch (e) {
        return e as CollectiveError;
      }
      return assert.fail('allReduceSync did not throw');
    })();
    assert.ok(sync instanceof CollectiveError && sync.kind === 'left' && /unusable after an earlier failure: rank 1 /.test(sync.message), sync.message);
    assert.ok(Date.now() - started < 200, 'the finding is reused, not made again');
    assert.equal((await rejection(rank1.broadcast(new Uint8Array(1), 0))).kind, 'closed');
  });

  it('allReduceSync that fails first asks the store at once (blocking), and names the rank that left', async () => {
    const world = new FakeNcclWorld(2, 400);
    const [rank0, rank1] = await group(world, await freePort());
    rank1.close();
    await new Promise((r) => setTimeout(r, 100));
    assert.throws(() => rank0.allReduceSync(new Float32Array(2), 'sum'), (err: CollectiveError) =>
      err.kind === 'left' && err.faultyRank === 1 && /left the group .*: allReduce #1 \(sum, 2 f32\) failed/.test(err.message));
  });

  it('a rank that never joins is named within the timeout; a store with a malformed id is refused', async () => {
    const world = new FakeNcclWorld(3, 1000);
    const port = await freePort();
    const fake = world.native(native as NcclNative);
    const started = Date.now();
    const errs = await Promise.all([0, 1].map((r) => rejection(NcclCollective.open(options(r, 3, port, 1500), fake))));
    for (const err of errs) {
      assert.equal(err.kind, 'never-joined');
      assert.equal(err.faultyRank, 2);
      assert.match(err.message, /rank 2 never joined within 1\.5 s \(world size 3\)/);
    }
    assert.ok(Date.now() - started < 6000);

    const short = new FakeNcclWorld(2, 1000);
    short.uniqueId = () => new Uint8Array(5);
    const port2 = await freePort();
    const fake2 = short.native(native as NcclNative);
    const [zero, one] = await Promise.allSettled([NcclCollective.open(options(0, 2, port2), fake2), NcclCollective.open(options(1, 2, port2), fake2)]);
    if (zero.status === 'fulfilled') open.push(zero.value);
    assert.equal(one.status, 'rejected');
    const err = (one as PromiseRejectedResult).reason as CollectiveError;
    assert.equal(err.kind, 'usage');
    assert.equal(err.message, `dalle: the store's ${NCCL_UNIQUE_ID_KEY} holds 5 bytes, not NCCL's 128`);
  });

  it("NCCL's initialisation failing on one rank is reported with NCCL's words and what to try", async () => {
    const world = new FakeNcclWorld(2, 1000);
    world.failInit.set(1, 'ncclCommInitRank (rank 1 of 2, cuda:1): ncclSystemError: System call (e.g. socket, malloc) or external library call failed');
    const port = await freePort();
    const fake = world.native(native as NcclNative);
    const [zero, one] = await Promise.allSettled([NcclCollective.open(options(0, 2, port), fake), NcclCollective.open(options(1, 2, port), fake)]);
    if (zero.status === 'fulfilled') open.push(zero.value);
    assert.equal(one.status, 'rejected');
    const err = (one as PromiseRejectedResult).reason as CollectiveError;
    assert.ok(err instanceof CollectiveError);
    assert.equal(err.kind, 'unknown', 'every rank is alive: nobody to blame but NCCL');
    assert.match(err.message, /NCCL's initialisation of 2 ranks \(rank 1 on cuda:1\) failed \(ncclCommInitRank \(rank 1 of 2, cuda:1\): ncclSystemError/);
    assert.match(err.hint, /NCCL_DEBUG=WARN/);
    assert.match(err.hint, /NCCL_SOCKET_IFNAME/);
  });

  it('rank 0 cannot serve on a port that is taken: refused at once, naming the address', async () => {
    const blocker = net.createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    try {
      const err = await rejection(NcclCollective.open(options(0, 2, port), new FakeNcclWorld(2, 1000).native(native as NcclNative)));
      assert.equal(err.kind, 'listen');
      assert.match(err.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use`));
    } finally {
      blocker.close();
    }
  });
});
