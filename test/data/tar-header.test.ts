/**
 * A tar member whose size field is not a number (found by test/fuzz): tar-stream hands on its header with size null and
 * then waits for its data forever, so indexing the shard never settled and `dalle dataset inspect` ended silently with
 * exit code 0. The shard is now reported 'corrupt' from that member on, and the complete samples before it are kept.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { openDataSource } from '../../src/core/data/sources/open';
import { repairTarChecksums, tarShard } from '../fuzz/targets';
import { temporaryDir } from './helpers';

describe('data: a tar member whose size is not a number', () => {
  it('is a corrupt shard from there on, and the samples before it load', async () => {
    const bytes = await tarShard();
    // The header of samples/001.txt, and in it the 12-byte octal size field (at 124), overwritten as the fuzzer did.
    const header = [...Array(bytes.length / 512).keys()].map((block) => block * 512)
      .find((at) => Buffer.from(bytes.subarray(at, at + 15)).toString('latin1') === 'samples/001.txt');
    assert.ok(header !== undefined);
    bytes.set(Buffer.from('\xe8c\xbf\x05\xa2,00032 ', 'latin1'), header + 124);
    const shard = path.join(temporaryDir(), 'shard.tar');
    fs.writeFileSync(shard, repairTarChecksums(bytes));

    const source = await openDataSource(shard);
    assert.deepEqual(source.skipped.toJSON().byReason, { corrupt: 1 });
    assert.match(source.skipped.toJSON().examples[0].detail, /^samples\/001\.txt: its size field is not a number of bytes \(null\), so nothing after it can be located/);
    assert.deepEqual(source.records.map((record) => record.id), ['shard.tar:samples/000', 'shard.tar:samples/001']);
    for (const record of source.records) assert.ok((await record.load()).length > 0);
  });
});
