/**
 * webdataset-style tar shards: the files of one sample share a key, the path up to the first dot of the file name
 * (`000123.jpg` + `000123.txt` are sample `000123`; `a/b.seg.png` has key `a/b` and extension `seg.png`). A sample
 * needs one image (`key.png`, `key.jpg`, `key.webp`, ...); `key.txt` holds its captions, one per line; other members
 * (`.json`, `.cls`, `.seg.png`) are passed over. Shards are read with tar-stream, in file-name order.
 *
 * Indexing reads each shard once from start to end, keeping captions and, for each image, where its bytes lie in the
 * shard; `load()` then reads just those bytes, so any sample can be loaded in any order (the loader shuffles whole
 * epochs). A shard cut short keeps the samples that are complete and is reported as 'truncated'; a file that is not
 * a tar archive is reported as 'corrupt'.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar-stream';
import { DataError, SkipError } from '../errors';
import { TextFileError } from '../../io/errors';
import { checkTextSize, decodeUserText, TEXT_LIMITS } from '../../io/text-file';
import { SkipReport } from '../skips';
import { fileSkipError, IMAGE_EXTENSIONS, parseCaptionText } from './files';
import { DataRecord, DataSource, SourceOptions } from './types';

/** Where one image lies inside a shard. */
interface ImageEntry {
  readonly member: string;
  /** Offset of the first data byte in the shard (tar-stream's header.byteOffset). */
  readonly offset: number;
  readonly size: number;
}

interface Sample {
  readonly shard: string;
  readonly key: string;
  images: ImageEntry[];
  captions: string[];
}

/** Opens one `.tar` shard, or every `.tar` file directly inside a folder. */
export async function openTarSource(target: string, options: SourceOptions = {}): Promise<DataSource> {
  const shards = fs.statSync(target).isDirectory()
    ? fs
        .readdirSync(target)
        .filter((name) => name.toLowerCase().endsWith('.tar'))
        .sort()
        .map((name) => path.join(target, name))
    : [target];
  const skipped = new SkipReport();
  const records: DataRecord[] = [];
  for (const shard of shards) {
    for (const sample of await indexShard(shard, skipped)) {
      const record = sampleRecord(sample, skipped, options);
      if (record !== undefined) records.push(record);
    }
  }
  return { kind: 'tar', path: target, records, skipped };
}

function sampleRecord(sample: Sample, skipped: SkipReport, options: SourceOptions): DataRecord | undefined {
  const id = `${path.basename(sample.shard)}:${sample.key}`;
  const [image, ...extra] = sample.images;
  for (const duplicate of extra) skipped.add('duplicate', id, `${duplicate.member}: the sample already has an image`);
  if (image === undefined) {
    skipped.add('no-image', id, 'a sample with captions but no image');
    return undefined;
  }
  if (options.requireCaptions === true && sample.captions.length === 0) {
    skipped.add('no-caption', id, `no ${sample.key}.txt in the shard`);
    return undefined;
  }
  return { id, captions: sample.captions, load: () => readRange(sample.shard, image) };
}

/** Reads every member header of `shard` (skipping over image data), grouping members into samples by key. */
async function indexShard(shard: string, skipped: SkipReport): Promise<Sample[]> {
  const name = path.basename(shard);
  const samples = new Map<string, Sample>();
  const sampleOf = (key: string): Sample => {
    let sample = samples.get(key);
    if (sample === undefined) {
      sample = { shard, key, images: [], captions: [] };
      samples.set(key, sample);
    }
    return sample;
  };
  let firstImage: { entry: ImageEntry; bytes: Buffer } | undefined;

  const extract = tar.extract();
  const input = fs.createReadStream(shard);
  input.on('error', (error) => extract.destroy(error));
  input.pipe(extract);
  try {
    for await (const member of extract) {
      const header = member.header;
      // tar-stream hands on a header whose size field is not a number (size null) and then waits for that member's
      // data forever: the shard's indexing never settled, and a command ended there, silently, with exit code 0.
      if (!Number.isSafeInteger(header.size) || (header.size as number) < 0) {
        throw new Error(`${header.name}: its size field is not a number of bytes (${String(header.size)}), so nothing after it can be located`);
      }
      if (header.type !== 'file' && header.type !== 'contiguous-file') {
        member.resume();
        continue;
      }
      const { key, extension } = splitMemberName(header.name);
      if (extension === 'txt') {
        const where = `${shard}:${header.name}`;
        checkTextSize(where, header.size ?? 0, TEXT_LIMITS.imageCaptions); // before reading it
        sampleOf(key).captions.push(...parseCaptionText(decodeUserText(await readAll(member), where, TEXT_LIMITS.imageCaptions)));
      } else if (IMAGE_EXTENSIONS.has(`.${extension}`)) {
        const entry = { member: header.name, offset: dataOffset(header, shard), size: header.size };
        sampleOf(key).images.push(entry);
        if (firstImage === undefined) firstImage = { entry, bytes: await readAll(member) };
        else member.resume();
      } else {
        member.resume();
      }
    }
  } catch (error) {
    if (error instanceof TextFileError) throw error; // a caption member that is not caption text: fix the shard
    const message = (error as Error).message;
    const reason = /unexpected end/i.test(message) ? 'truncated' : 'corrupt';
    skipped.add(reason, name, `${message}; the complete samples before it are kept`);
  } finally {
    input.destroy();
  }

  if (firstImage !== undefined) await checkOffsets(shard, firstImage.entry, firstImage.bytes);
  // A member whose data runs past the end of the file was cut off: its sample cannot be loaded.
  const shardSize = fs.statSync(shard).size;
  const complete: Sample[] = [];
  for (const sample of samples.values()) {
    const cut = sample.images.find((image) => image.offset + image.size > shardSize);
    if (cut === undefined) complete.push(sample);
    else skipped.add('truncated', `${name}:${sample.key}`, `${cut.member} ends past the end of the shard`);
  }
  return complete;
}

/** webdataset's rule: the key is everything before the first dot of the file name; the rest is the extension. */
export function splitMemberName(member: string): { key: string; extension: string } {
  const slash = member.lastIndexOf('/');
  const dot = member.indexOf('.', slash + 1);
  if (dot < 0) return { key: member, extension: '' };
  return { key: member.slice(0, dot), extension: member.slice(dot + 1).toLowerCase() };
}

/** tar-stream records where each member's data begins; this reads that position (see checkOffsets). */
function dataOffset(header: tar.Header, shard: string): number {
  const offset = (header as tar.Header & { byteOffset?: unknown }).byteOffset;
  if (typeof offset !== 'number') {
    throw new DataError(
      `cannot index ${shard}: this version of tar-stream does not report where members begin (header.byteOffset)`,
      'reinstall the version in package-lock.json (npm ci)',
    );
  }
  return offset;
}

/** Compares the first image as streamed with the same bytes read at its recorded offset, once per shard. */
async function checkOffsets(shard: string, entry: ImageEntry, streamed: Buffer): Promise<void> {
  if (streamed.length !== entry.size) return; // cut short: reported as truncated, nothing to compare
  const read = await readRange(shard, entry).catch(() => undefined);
  if (read === undefined || !read.equals(streamed)) {
    throw new DataError(
      `cannot index ${shard}: the bytes at tar-stream's offset for ${entry.member} differ from the member's contents`,
      'reinstall the version of tar-stream in package-lock.json (npm ci); report this if it persists',
    );
  }
}

async function readRange(shard: string, entry: ImageEntry): Promise<Buffer> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(shard, 'r');
  } catch (error) {
    throw fileSkipError(error);
  }
  try {
    const bytes = Buffer.alloc(entry.size);
    let done = 0;
    while (done < entry.size) {
      const { bytesRead } = await handle.read(bytes, done, entry.size - done, entry.offset + done);
      if (bytesRead === 0) {
        throw new SkipError('truncated', `${entry.member}: ${done} of ${entry.size} bytes in the shard`);
      }
      done += bytesRead;
    }
    return bytes;
  } finally {
    await handle.close();
  }
}

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
