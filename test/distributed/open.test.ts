/**
 * openCollective's choices (one process, Gloo for the CPU; CUDA ranks: nccl.test.ts), `dalle info`'s line, and the Gloo
 * group within one process: its store refuses malformed and mistaken clients, rank 0 cannot serve on a taken port,
 * a rank that leaves is named, and a group that failed or was closed refuses every later operation at once.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { Collective, CollectiveError } from '../../src/core/distributed/collective';
import { glooStatus } from '../../src/core/distributed/gloo';
import { ncclStatus } from '../../src/core/distributed/nccl';
import { availableCollectives, openCollective, OpenCollectiveOptions } from '../../src/core/distributed/open';
import { engineReport, formatCollectives } from '../../src/core/engine-info';
import { freePort } from './gloo-ranks';

function options(rank: number, worldSize: number, port: number, timeoutMs = 4000): OpenCollectiveOptions {
  return { rank, worldSize, localRank: rank, masterAddr: '127.0.0.1', masterPort: port, timeoutMs, device: 'cpu' };
}

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<CollectiveError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    assert.ok(err instanceof CollectiveError, `not a CollectiveError: ${String(err)}`);
    return err;
  }
  return assert.fail('expected a CollectiveError');
}

describe('distributed: openCollective', () => {
  it('one process needs no library: SingleProcess, whatever the device', async () => {
    for (const device of ['cpu', 'cuda', 'cuda:1']) {
      const c = await openCollective({ ...options(0, 1, 1), device });
      assert.equal(c.backend, 'single');
    }
  });

  it('refuses a rank outside the world and an unknown device, before any network', async () => {
    assert.equal((await rejection(openCollective(options(2, 2, 1)))).kind, 'usage');
    assert.match((await rejection(openCollective({ ...options(0, 2, 1), device: 'tpu' }))).message, /^dalle: unknown device 'tpu'/);
    assert.match((await rejection(openCollective(options(0, 2, 0)))).message, /MASTER_PORT 0 is not a port/);
  });

  it('availableCollectives and `dalle info` say which backends this build has, and why not the others', () => {
    const list = availableCollectives();
    assert.deepEqual(list.map((c) => c.backend), ['single', 'gloo', 'nccl']);
    const gloo = glooStatus();
    assert.equal(list[1].available, gloo.available);
    assert.equal(list[1].detail, gloo.available ? `Gloo ${gloo.glooVersion} over TCP, CPU ranks` : gloo.reason);
    const nccl = ncclStatus();
    assert.equal(list[2].available, nccl.available);
    if (!nccl.available) assert.equal(list[2].detail, nccl.reason);
    assert.deepEqual(engineReport().collectives, list);
    const line = formatCollectives(list);
    assert.ok(line.startsWith(gloo.available ? 'gloo (Gloo ' : 'one process only'), line);
    if (!nccl.available) assert.ok(line.includes(`nccl (${nccl.reason})`), line);
  });
});

describe('distributed: a Gloo group within one process', function () {
  this.timeout(15000);
  const open: Collective[] = [];

  beforeEach(function () {
    const status = glooStatus();
    if (!status.available) {
      console.log(`      skipped: ${status.reason}`);
      this.skip();
    }
  });

  afterEach(() => {
    open.splice(0).forEach((c) => c.close());
  });

  async function pair(port: number, timeoutMs = 4000): Promise<Collective[]> {
    const ranks = await Promise.all([openCollective(options(0, 2, port, timeoutMs)), openCollective(options(1, 2, port, timeoutMs))]);
    open.push(...ranks);
    return ranks;
  }

  it('rank 0 cannot serve on a port that is taken: refused at once, naming the address', async () => {
    const blocker = net.createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    try {
      const started = Date.now();
      const err = await rejection(openCollective(options(0, 2, port)));
      assert.equal(err.kind, 'listen');
      assert.match(err.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: Address already in use`));
      assert.ok(Date.now() - started < 1000);
    } finally {
      blocker.close();
    }
  });

  it("the store closes connections that send malformed frames, answers a mistaken Hello with the reason, and still forms the group", async () => {
    const port = await freePort();
    const rank0 = openCollective(options(0, 2, port));
    // Raw clients: a frame length over the limit, a request before Hello, a Hello that is not dalle's.
    const frame = (body: number[]): Buffer => {
      const b = Buffer.alloc(4 + body.length);
      b.writeUInt32LE(body.length, 0);
      Buffer.from(body).copy(b, 4);
      return b;
    };
    const u32 = (v: number): number[] => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
    const hello = (magic: number, rank: number, world: number): Buffer =>
      frame([1, ...u32(magic), ...u32(1), ...u32(rank), ...u32(world), ...u32(1234), ...u32(1), 104]);
    const exchange = (bytes: Buffer): Promise<Buffer> => new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      const got: Buffer[] = [];
      s.on('connect', () => s.write(bytes));
      s.on('data', (d) => got.push(d));
      s.on('close', () => resolve(Buffer.concat(got)));
      s.on('error', reject);
      setTimeout(() => reject(new Error('the store kept a malformed connection open')), 3000).unref();
    });
    const oversize = Buffer.alloc(8);
    oversize.writeUInt32LE(0xffffffff, 0);
    assert.equal((await exchange(oversize)).length, 0);
    assert.equal((await exchange(frame([2, ...u32(1), 107, ...u32(0)]))).length, 0, 'a Set before Hello');
    assert.equal((await exchange(hello(0x12345678, 1, 2))).length, 0, 'a Hello with the wrong magic');
    const refused = await exchange(hello(0x31434c44, 1, 3));
    assert.equal(refused[4], 0x82, 'an Error reply');
    assert.match(refused.subarray(9).toString(), /this rank was started with world size 3, rank 0 with 2/);
    // The group forms all the same.
    const rank1 = openCollective(options(1, 2, port));
    const ranks = await Promise.all([rank0, rank1]);
    open.push(...ranks);
    const data = [new Float64Array([1, -2]), new Float64Array([10, 20])];
    await Promise.all(ranks.map((c, r) => c.allReduce(data[r], 'max')));
    assert.deepEqual(data.map((d) => Array.from(d)), [[10, 20], [10, 20]]);
  });

  it('a second process with the same rank is refused, naming the first', async () => {
    const port = await freePort();
    const rank0 = openCollective(options(0, 3, port, 3000));
    const first = openCollective(options(1, 3, port, 3000));
    await new Promise((r) => setTimeout(r, 300));
    const twin = await rejection(openCollective(options(1, 3, port, 3000)));
    assert.equal(twin.kind, 'usage');
    assert.match(twin.message, new RegExp(`rank 1 already joined from host [^,]+, pid ${process.pid}`));
    // Rank 2 never comes: both fail naming it.
    for (const err of await Promise.all([rejection(rank0), rejection(first)])) {
      assert.equal(err.kind, 'never-joined');
      assert.equal(err.faultyRank, 2);
    }
  });

  it('a rank that closes its collective is named by the other, whose later operations then fail at once', async () => {
    const [rank0, rank1] = await pair(await freePort());
    rank1.close();
    const err = await rejection(rank0.allReduce(new Float32Array(10), 'sum'));
    assert.equal(err.kind, 'left');
    assert.equal(err.faultyRank, 1);
    assert.match(err.message, /^dalle: rank 1 \(host [^,]+, pid \d+\) left the group \(it closed its collective\): allReduce #1 \(sum, 10 f32\) failed/);
    const started = Date.now();
    const again = await rejection(rank0.barrier());
    assert.match(again.message, /the group is unusable after an earlier failure: rank 1 .* left the group/);
    assert.throws(() => rank0.allReduceSync(new Float64Array(1), 'min'), /unusable after an earlier failure/);
    assert.ok(Date.now() - started < 200, 'refused without waiting');
    // The closed rank refuses too, saying it was closed.
    assert.equal((await rejection(rank1.broadcast(new Uint8Array(1), 0))).kind, 'closed');
    rank1.close();
  });

  it('allReduceSync blocks until done; zero-length operations and a bad root are handled before the network', async () => {
    const [rank0, rank1] = await pair(await freePort());
    const a = new Float32Array([1, 2, 3]);
    const b = new Float32Array([4, 5, 6]);
    // Rank 1's operation is queued first (async), so rank 0's blocking call can meet it.
    const pending = rank1.allReduce(b, 'min');
    rank0.allReduceSync(a, 'min');
    await pending;
    assert.deepEqual(Array.from(a), [1, 2, 3]);
    assert.deepEqual(Array.from(b), [1, 2, 3]);
    await Promise.all([rank0.allReduce(new Float64Array(0), 'sum'), rank1.allReduce(new Float64Array(0), 'sum')]);
    await Promise.all([rank0.allReduceBuffers([], 'sum'), rank1.allReduceBuffers([], 'sum')]);
    assert.equal((await rejection(rank0.broadcast(new Uint8Array(1), 2))).kind, 'usage');
    assert.equal((await rejection(rank0.allReduce(new Float32Array(1), 'mean' as 'sum'))).kind, 'usage');
  });
});
