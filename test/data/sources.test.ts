/** Data sources: folders with .txt captions, JSONL and CSV manifests, webdataset tar shards; bad entries counted. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as tar from 'tar-stream';
import { DataError } from '../../src/core/data/errors';
import { openCsvSource, parseCsvRows } from '../../src/core/data/sources/csv';
import { openFolderSource } from '../../src/core/data/sources/folder';
import { openJsonlSource } from '../../src/core/data/sources/jsonl';
import { detectSourceKind, openDataSource } from '../../src/core/data/sources/open';
import { openTarSource, splitMemberName } from '../../src/core/data/sources/tar';
import { DataSource } from '../../src/core/data/sources/types';
import { noisePng, solidPng, temporaryDir } from './helpers';

function write(dir: string, name: string, contents: string | Buffer): string {
  const file = path.join(dir, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, contents);
  return file;
}

/** A tar archive of `members` in order, built with tar-stream's packer. */
async function tarBytes(members: readonly { name: string; data: string | Buffer }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const member of members) pack.entry({ name: member.name }, member.data);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function byId(source: DataSource): Map<string, readonly string[]> {
  return new Map(source.records.map((record) => [record.id, record.captions]));
}

describe('data: folder source', () => {
  it('pairs images with same-name .txt captions (one per line), walks sub-folders in sorted order', async () => {
    const dir = temporaryDir();
    const red = await solidPng(4, 4, { r: 255, g: 0, b: 0 });
    write(dir, 'b.png', red);
    write(dir, 'b.txt', 'a red square\r\n\n  a small red tile  \n');
    write(dir, 'a.jpg', red);
    write(dir, 'sub/c.png', red);
    write(dir, 'sub/c.txt', '\uFEFFnested\n');
    write(dir, 'uncaptioned.png', red);
    write(dir, '.hidden.png', 'not listed');
    const source = await openFolderSource(dir);
    assert.equal(source.kind, 'folder');
    assert.deepEqual(
      source.records.map((record) => record.id),
      ['a.jpg', 'b.png', 'sub/c.png', 'uncaptioned.png'],
    );
    assert.deepEqual(byId(source).get('b.png'), ['a red square', 'a small red tile']);
    assert.deepEqual(byId(source).get('sub/c.png'), ['nested']);
    assert.deepEqual(byId(source).get('a.jpg'), []);
    assert.deepEqual(await source.records[1].load(), red);
    assert.equal(source.records[1].file, path.join(dir, 'b.png'));
    assert.equal(source.skipped.total, 0);
  });

  it('counts non-images and orphan captions, passes over metadata, and can require captions', async () => {
    const dir = temporaryDir();
    const png = await solidPng(4, 4, { r: 0, g: 0, b: 255 });
    write(dir, 'a.png', png);
    write(dir, 'a.txt', 'blue');
    write(dir, 'b.png', png);
    write(dir, 'notes.doc', 'words');
    write(dir, 'lonely.txt', 'no image');
    write(dir, 'manifest.jsonl', '{}');
    const source = await openFolderSource(dir, { requireCaptions: true });
    assert.deepEqual(source.records.map((record) => record.id), ['a.png']);
    assert.deepEqual(source.skipped.toJSON().byReason, { 'no-caption': 1, 'no-image': 1, 'not-an-image': 1 });
    assert.equal(source.skipped.toJSON().examples.find((e) => e.reason === 'not-an-image')?.id, 'notes.doc');
  });
});

describe('data: JSONL manifest', () => {
  it('reads {"image", "caption"} lines relative to the manifest; counts bad lines and missing files', async () => {
    const dir = temporaryDir();
    const png = await solidPng(4, 4, { r: 0, g: 255, b: 0 });
    write(dir, 'img/one.png', png);
    write(dir, 'img/two.png', png);
    const lines = [
      JSON.stringify({ image: 'img/one.png', caption: 'one' }),
      '',
      JSON.stringify({ image: 'img/two.png', caption: ['two', 'zwei'] }),
      '{"image": "img/one.png", "caption": ', // cut-off line
      JSON.stringify({ caption: 'no image' }),
      JSON.stringify({ image: 'img/absent.png', caption: 'gone' }),
      JSON.stringify({ image: path.join(dir, 'img/one.png') }), // absolute, no caption
      JSON.stringify({ image: 'img/two.png', caption: 7 }),
    ];
    const manifest = write(dir, 'data.jsonl', lines.join('\n') + '\n');
    const source = await openJsonlSource(manifest);
    assert.deepEqual(
      source.records.map((record) => [record.id.split(' ')[0], record.captions]),
      [
        ['data.jsonl:1', ['one']],
        ['data.jsonl:3', ['two', 'zwei']],
        ['data.jsonl:7', []],
      ],
    );
    assert.deepEqual(source.skipped.toJSON().byReason, { 'bad-manifest-entry': 3, 'missing-file': 1 });
    const missing = source.skipped.toJSON().examples.find((example) => example.reason === 'missing-file');
    assert.match(missing?.detail ?? '', /relative to the manifest's folder/);
    assert.deepEqual(await source.records[1].load(), png);
  });
});

describe('data: CSV manifest', () => {
  it('parses RFC 4180: quotes, commas and line breaks in fields, doubled quotes, CRLF, a BOM', async () => {
    const text = '\uFEFFimage,caption\r\na.png,"red, round"\r\n"b.png","say ""hi""\nand bye"\nc.png,\n\n';
    assert.deepEqual(await parseCsvRows(text, 'm.csv'), [
      { line: 1, fields: ['image', 'caption'] },
      { line: 2, fields: ['a.png', 'red, round'] },
      { line: 3, fields: ['b.png', 'say "hi"\nand bye'] },
      { line: 5, fields: ['c.png', ''] },
    ]);
    // a quote never closed was the rest of the file skipped with a report; it is now an error naming its line
    await assert.rejects(parseCsvRows('image,caption\na.png,"never closed\nb.png,x\n', 'm.csv'), (error: unknown) => {
      assert.ok(error instanceof DataError);
      assert.match(error.message, /^m\.csv:2: not CSV: a quoted field opened in this row is never closed$/);
      return true;
    });
  });

  it('refuses a row with more or fewer fields than the header, naming the file and line (nothing dropped)', async () => {
    const dir = temporaryDir();
    write(dir, 'a.png', await solidPng(4, 4, { r: 9, g: 9, b: 9 }));
    // an unquoted comma: the caption was cut to "red" and " round" dropped without a word
    const wide = write(dir, 'wide.csv', 'image,caption\na.png,"fine"\n\na.png,red, round\n');
    await assert.rejects(openCsvSource(wide), (error: unknown) => {
      assert.ok(error instanceof DataError);
      assert.match(error.message, /wide\.csv:4: the row has 3 fields, the header has 2 \(image, caption\)/);
      assert.match(error.hint ?? '', /quote a field that holds a comma/);
      return true;
    });
    const narrow = write(dir, 'narrow.csv', 'image,caption,source\na.png,"two\nlines",x\na.png,only two\n');
    await assert.rejects(openCsvSource(narrow), /narrow\.csv:4: the row has 2 fields, the header has 3/);
  });

  it('finds the image and caption columns by name; a cell of several lines is several captions', async () => {
    const dir = temporaryDir();
    const png = await solidPng(4, 4, { r: 9, g: 9, b: 9 });
    write(dir, 'a.png', png);
    write(dir, 'b.png', png);
    const rows = ['id,Caption,File', '1,"grey\nsquare",a.png', '2,nothing,', '3,,b.png', '4,x,missing.png'];
    const manifest = write(dir, 'm.csv', rows.join('\n') + '\n');
    const source = await openCsvSource(manifest);
    assert.deepEqual(
      source.records.map((record) => [record.id, record.captions]),
      [
        ['m.csv:2 a.png', ['grey', 'square']],
        ['m.csv:5 b.png', []],
      ],
    );
    assert.deepEqual(source.skipped.toJSON().byReason, { 'bad-manifest-entry': 1, 'missing-file': 1 });
    const headless = write(dir, 'bad.csv', 'caption,width\nx,1\n');
    await assert.rejects(openCsvSource(headless), (error: unknown) => {
      assert.ok(error instanceof DataError);
      assert.match(error.message, /no image column/);
      assert.match(error.hint ?? '', /image,caption/);
      return true;
    });
  });
});

describe('data: tar shards (webdataset)', () => {
  it('splits member names into key and extension at the first dot of the file name', () => {
    assert.deepEqual(splitMemberName('000123.jpg'), { key: '000123', extension: 'jpg' });
    assert.deepEqual(splitMemberName('a.b/c.seg.PNG'), { key: 'a.b/c', extension: 'seg.png' });
    assert.deepEqual(splitMemberName('README'), { key: 'README', extension: '' });
  });

  it('groups key.png + key.txt into samples across shards and loads the exact bytes', async () => {
    const dir = temporaryDir();
    const png0 = await noisePng(8, 8, 1);
    const png1 = await noisePng(9, 7, 2);
    const jpg2 = await noisePng(5, 5, 3);
    const longKey = `deep/${'k'.repeat(120)}`; // a name over 100 bytes: tar-stream writes a PAX header for it
    write(
      dir,
      'shard-000.tar',
      await tarBytes([
        { name: 's0.png', data: png0 },
        { name: 's0.txt', data: 'first\nfirst again\n' },
        { name: 's0.json', data: '{"ignored": true}' },
        { name: 's1.txt', data: 'second' },
        { name: 's1.png', data: png1 },
        { name: 's1.seg.png', data: png0 }, // another kind of member of the sample: passed over
      ]),
    );
    write(
      dir,
      'shard-001.tar',
      await tarBytes([
        { name: `${longKey}.jpg`, data: jpg2 },
        { name: 'orphan.txt', data: 'no image' },
        { name: 'twice.png', data: png0 },
        { name: 'twice.jpg', data: png1 },
      ]),
    );
    assert.equal(detectSourceKind(dir), 'tar');
    const source = await openDataSource(dir);
    assert.equal(source.kind, 'tar');
    assert.deepEqual(
      source.records.map((record) => [record.id, record.captions]),
      [
        ['shard-000.tar:s0', ['first', 'first again']],
        ['shard-000.tar:s1', ['second']],
        [`shard-001.tar:${longKey}`, []],
        ['shard-001.tar:twice', []],
      ],
    );
    assert.deepEqual(source.skipped.toJSON().byReason, { duplicate: 1, 'no-image': 1 });
    const loaded = await Promise.all(source.records.map((record) => record.load()));
    assert.deepEqual(loaded, [png0, png1, jpg2, png0]);
    assert.equal(source.records[0].file, undefined);
  });

  it('keeps the complete samples of a cut-off shard and reports it; a non-tar file is corrupt', async () => {
    const dir = temporaryDir();
    const big = await noisePng(64, 64, 4);
    const whole = await tarBytes([
      { name: 'a.png', data: await noisePng(8, 8, 5) },
      { name: 'a.txt', data: 'kept' },
      { name: 'b.png', data: big },
      { name: 'b.txt', data: 'lost' },
    ]);
    const cut = write(dir, 'cut.tar', whole.subarray(0, 512 * 4 + Math.floor(big.length / 2)));
    const source = await openTarSource(cut);
    assert.deepEqual(source.records.map((record) => record.id), ['cut.tar:a']);
    // the shard (tar-stream: unexpected end of data) and its sample whose image runs past the end
    assert.deepEqual(
      source.skipped.toJSON().examples.map((example) => [example.reason, example.id]),
      [
        ['truncated', 'cut.tar'],
        ['truncated', 'cut.tar:b'],
      ],
    );

    const notTar = write(dir, 'not.tar', Buffer.alloc(2048, 7));
    const bad = await openTarSource(notTar);
    assert.equal(bad.records.length, 0);
    assert.deepEqual(bad.skipped.toJSON().byReason, { corrupt: 1 });
  });
});

describe('data: opening a data set by its path', () => {
  it('tells manifests, shards and folders apart, and names what it cannot open', async () => {
    const dir = temporaryDir();
    write(dir, 'x.png', await solidPng(2, 2, { r: 0, g: 0, b: 0 }));
    assert.equal(detectSourceKind(dir), 'folder');
    assert.equal(detectSourceKind(write(dir, 'm.jsonl', '')), 'jsonl');
    assert.equal(detectSourceKind(write(dir, 'm.csv', '')), 'csv');
    assert.throws(() => detectSourceKind(path.join(dir, 'absent')), DataError);
    assert.throws(() => detectSourceKind(write(dir, 'data.parquet', '')), /cannot tell what kind/);
  });
});
