/**
 * The parsers the fuzzer feeds, each through the function a command calls: its valid seed inputs, how one input is
 * parsed (written to a file first where the parser reads files), the named errors that are its answer to a bad input,
 * and how many inputs a run makes (the budgets keep the whole suite near 15 s on 2 cores). A parser that accepts an
 * input must also hand back something consistent (checked here), and whatever it returns is used the way a command
 * would use it (a tar sample's bytes loaded, a tokenizer encoding a caption).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar-stream';
import { resolveAnyConfig } from '../../src/core/config';
import { openDataSource } from '../../src/core/data/sources/open';
import { decodeNpy, encodeNpy } from '../../src/core/io/npy';
import { decodeSafetensors, encodeSafetensors, SafetensorsReader } from '../../src/core/io/safetensors';
import { encodeModel, OnnxDataType } from '../../src/core/onnx/proto';
import { createSession, loadOnnxRuntime, readOnnxFile } from '../../src/core/onnx/runtime';
import { TextTokenizer } from '../../src/core/text';
import { readTorchFile } from '../../src/core/io/torch-file';
import { OPENAI_DVAE_CLASSES } from '../../src/core/models/dvae/openai-release';
import { mutatedInput } from './mutate';

export interface FuzzTarget {
  readonly name: string;
  /** Inputs one run makes. */
  readonly inputs: number;
  /** `error.name`s that are the parser's own answer to a bad input; anything else thrown is a bug. */
  readonly namedErrors: readonly string[];
  /** Valid small inputs to mutate; `dir` is the run's own scratch folder. */
  seeds(dir: string): Promise<Uint8Array[]>;
  /**
   * Makes a mutated input pass the format's own integrity check (a tar header's checksum), so that half the inputs
   * reach the fields behind it instead of being refused at the check.
   */
  repair?(bytes: Uint8Array): Uint8Array;
  /** Parses one input; resolves when it is accepted, throws when it is refused. */
  parse(bytes: Uint8Array, dir: string): Promise<void>;
}

const ROOT = path.resolve(__dirname, '..', '..', '..');
const utf8 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'utf8'));
const joined = (chunks: readonly Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(chunks));

function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, side) => product * side, 1);
}

function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`fuzz: an accepted input gave an inconsistent result: ${what}`);
}

/** Writes `bytes` to dir/name and returns the path. */
function inputFile(dir: string, name: string, bytes: Uint8Array): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return file;
}

const safetensors: FuzzTarget = {
  name: 'safetensors',
  inputs: 2500,
  namedErrors: ['SafetensorsError'],
  async seeds() {
    const tensors = {
      'encoder.w': { dtype: 'f32' as const, shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-3, 7]) },
      'encoder.b': { dtype: 'bf16' as const, shape: [3], data: Uint16Array.from([0x3f80, 0xbf80, 0]) },
      step: { dtype: 'i64' as const, shape: [], data: BigInt64Array.from([42n]) },
      mask: { dtype: 'bool' as const, shape: [4], data: Uint8Array.from([1, 0, 1, 1]) },
    };
    return [joined(encodeSafetensors(tensors, { format: 'dalle-checkpoint', step: '7' })), joined(encodeSafetensors({}))];
  },
  async parse(bytes, dir) {
    for (const array of decodeSafetensors(bytes).tensors.values()) check(array.data.length === elementCount(array.shape), 'data length != shape');
    // The lazy reader checkpoints use, on a file.
    const reader = SafetensorsReader.open(inputFile(dir, 'input.safetensors', bytes));
    try {
      for (const name of reader.names) check(reader.readBytes(name).byteLength === reader.info(name).byteLength, `${name}: byte length`);
    } finally {
      reader.close();
    }
  },
};

/** A Fortran-ordered (2, 2) f64 array, as NumPy writes a transposed one (encodeNpy writes C order only). */
function fortranNpy(): Uint8Array {
  const dict = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }";
  const headerLength = Math.ceil((10 + dict.length + 1) / 64) * 64 - 10;
  const prefix = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, headerLength & 0xff, headerLength >> 8]);
  const header = Buffer.from(dict.padEnd(headerLength - 1, ' ') + '\n', 'latin1');
  return joined([prefix, header, new Uint8Array(Float64Array.from([1, 2, 3, 4]).buffer)]);
}

const npy: FuzzTarget = {
  name: 'npy',
  inputs: 2500,
  namedErrors: ['NpyError'],
  async seeds() {
    return [
      joined(encodeNpy({ dtype: 'i32', shape: [2, 3, 4], data: Int32Array.from({ length: 24 }, (_, i) => i - 5) })),
      joined(encodeNpy({ dtype: 'f32', shape: [3], data: Float32Array.from([0.5, -1, 2]) })),
      joined(encodeNpy({ dtype: 'bool', shape: [], data: Uint8Array.from([1]) })),
      fortranNpy(),
    ];
  },
  async parse(bytes) {
    const array = decodeNpy(bytes);
    check(array.data.length === elementCount(array.shape), 'data length != shape');
  },
};

/** A webdataset shard: two samples (image + captions), an image without captions, a directory, a stray member. */
export async function tarShard(): Promise<Uint8Array> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => {
    chunks.push(chunk as Buffer);
  });
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  pack.entry({ name: 'samples', type: 'directory' });
  pack.entry({ name: 'samples/000.png' }, Buffer.from('\x89PNG\r\n\x1a\n not really pixels'));
  pack.entry({ name: 'samples/000.txt' }, 'a red apple\na shiny red apple\n');
  pack.entry({ name: 'samples/001.jpg' }, Buffer.alloc(700, 7));
  pack.entry({ name: 'samples/001.txt' }, 'grinning face, noto style\n');
  pack.entry({ name: 'samples/002.webp' }, Buffer.from('RIFF0000WEBP'));
  pack.entry({ name: 'samples/001.json' }, '{"width": 64}');
  pack.finalize();
  await done;
  return new Uint8Array(Buffer.concat(chunks));
}

/** Recomputes the checksum of every 512-byte block that looks like a ustar header (sum of its bytes, field as spaces). */
export function repairTarChecksums(bytes: Uint8Array): Uint8Array {
  for (let block = 0; block + 512 <= bytes.length; block += 512) {
    if (Buffer.from(bytes.subarray(block + 257, block + 262)).toString('latin1') !== 'ustar') continue;
    bytes.fill(0x20, block + 148, block + 156);
    let sum = 0;
    for (let i = block; i < block + 512; i++) sum += bytes[i];
    bytes.set(Buffer.from(`${sum.toString(8).padStart(6, '0')}\0 `, 'latin1'), block + 148);
  }
  return bytes;
}

const tarShards: FuzzTarget = {
  name: 'tar',
  repair: repairTarChecksums,
  inputs: 500,
  namedErrors: ['DataError', 'SkipError', 'TextFileError'],
  async seeds() {
    return [await tarShard()];
  },
  async parse(bytes, dir) {
    const source = await openDataSource(inputFile(dir, 'shard.tar', bytes));
    for (const record of source.records) {
      try {
        await record.load();
      } catch (error) {
        if ((error as Error).name !== 'SkipError') throw error; // one unloadable sample is skipped, not the set
      }
    }
  },
};

const yamlConfig: FuzzTarget = {
  name: 'yaml config',
  inputs: 500,
  namedErrors: ['ConfigError', 'TextFileError'],
  async seeds() {
    const shipped = ['dvae-emoji.yaml', 'prior-emoji.yaml'].map((name) => new Uint8Array(fs.readFileSync(path.join(ROOT, 'configs', name))));
    return [...shipped, utf8('kind: prior\nmodel: &m\n  n_layers: 2\ntrain:\n  grad_scale:\n    init: 8192.0\n  lr: 3.0e-4\nruntime: { seed: 7 }\n')];
  },
  async parse(bytes, dir) {
    const { config } = resolveAnyConfig({ file: inputFile(dir, 'config.yaml', bytes) });
    check(config.kind === 'dvae' || config.kind === 'prior', `kind ${String(config.kind)}`);
  },
};

/** The images the manifests name (their bytes do not matter: manifests are indexed, not decoded). */
function writeManifestImages(dir: string): void {
  for (const name of ['a.png', 'b.jpg']) fs.writeFileSync(path.join(dir, name), 'image bytes');
}

const jsonlManifest: FuzzTarget = {
  name: 'jsonl manifest',
  inputs: 800,
  namedErrors: ['DataError', 'TextFileError'],
  async seeds(dir) {
    writeManifestImages(dir);
    return [utf8('{"image": "a.png", "caption": "a red apple"}\n{"image": "b.jpg", "caption": ["two", "captions\\nin one"]}\n{"image": "missing.png"}\n\n')];
  },
  async parse(bytes, dir) {
    const source = await openDataSource(inputFile(dir, 'manifest.jsonl', bytes));
    for (const record of source.records) check(Array.isArray(record.captions) && record.captions.every((c) => typeof c === 'string'), 'captions');
  },
};

const csvManifest: FuzzTarget = {
  name: 'csv manifest',
  inputs: 600,
  namedErrors: ['DataError', 'TextFileError'],
  async seeds(dir) {
    writeManifestImages(dir);
    return [utf8('image,caption\na.png,a red apple\r\nb.jpg,"a cat, grinning, ""quoted"""\n"a.png","two\nlines"\n')];
  },
  async parse(bytes, dir) {
    const source = await openDataSource(inputFile(dir, 'manifest.csv', bytes));
    for (const record of source.records) check(Array.isArray(record.captions) && record.captions.every((c) => typeof c === 'string'), 'captions');
  },
};

const tokenizerJson: FuzzTarget = {
  name: 'tokenizer.json',
  inputs: 700,
  namedErrors: ['TokenizerError', 'TextFileError'],
  async seeds(dir) {
    const trained = await TextTokenizer.train(['a red apple', 'a grinning cat face', 'red apples and green pears'], { vocabSize: 262, lowercase: true });
    const file = path.join(dir, 'seed.json');
    trained.save(file);
    return [new Uint8Array(fs.readFileSync(file))];
  },
  async parse(bytes, dir) {
    const tokenizer = TextTokenizer.load(inputFile(dir, 'tokenizer.json', bytes));
    // A tokenizer that loads must work: ids in its vocabulary, and back to text.
    const ids = tokenizer.encode('A red apple, grinning 😀');
    check(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tokenizer.vocabSize), 'ids outside the vocabulary');
    tokenizer.decode(ids);
  },
};

/** y = x W + b: a tiny graph with a weight inside, as dalle's exports have. */
function tinyOnnxModel(): Uint8Array {
  const floats = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);
  const value = (name: string) => ({ name, type: { tensor_type: { elem_type: OnnxDataType.FLOAT, shape: { dim: [{ dim_param: 'n' }, { dim_value: 2 }] } } } });
  return encodeModel({
    ir_version: 8,
    opset_import: [{ domain: '', version: 17 }],
    producer_name: 'dalle',
    metadata_props: [{ key: 'dalle.role', value: 'test' }],
    graph: {
      name: 'tiny',
      node: [
        { op_type: 'MatMul', input: ['x', 'W'], output: ['xw'] },
        { op_type: 'Add', input: ['xw', 'b'], output: ['y'] },
      ],
      initializer: [
        { name: 'W', dims: [2, 2], data_type: OnnxDataType.FLOAT, raw_data: floats([1, 2, 3, 4]) },
        { name: 'b', dims: [2], data_type: OnnxDataType.FLOAT, raw_data: floats([0.5, -0.5]) },
      ],
      input: [value('x')],
      output: [value('y')],
    },
  });
}

const onnxModel: FuzzTarget = {
  name: 'onnx model',
  inputs: 1000,
  namedErrors: ['OnnxModelError'],
  async seeds() {
    return [tinyOnnxModel()];
  },
  async parse(bytes, dir) {
    const expected = {
      what: 'the fuzzed graph',
      inputs: [{ name: 'x', dtype: 'FLOAT' as const, rank: 2 }],
      outputs: [{ name: 'y', dtype: 'FLOAT' as const, rank: 2 }],
      role: 'test',
      hint: 'export it again',
    };
    const checked = readOnnxFile(inputFile(dir, 'model.onnx', bytes), expected);
    check(checked.model.graph !== undefined, 'no graph');
    // What the runners do next: onnxruntime loads it (its warnings about odd graphs are not wanted in the test log).
    loadOnnxRuntime().env.logLevel = 'fatal';
    const session = await createSession(checked, expected, { threads: 1 });
    await session.release();
  },
};

/** torch.save files (the zip and the legacy format) through the restricted unpickler `dalle convert openai-dvae` uses. */
const torchSave: FuzzTarget = {
  name: 'torch.save',
  inputs: 800,
  namedErrors: ['TorchFileError', 'PickleRefusedError', 'PickleFormatError'],
  async seeds() {
    const fixtures = path.join(ROOT, 'test', 'fixtures', 'openai-dvae');
    return ['encoder.zip.pkl', 'encoder.legacy.pkl', 'views.pkl'].map((name) => new Uint8Array(fs.readFileSync(path.join(fixtures, name))));
  },
  async parse(bytes, dir) {
    const read = await readTorchFile(inputFile(dir, 'model.pkl', bytes), OPENAI_DVAE_CLASSES);
    // A file that reads must hand back whole tensors: as many values as their shapes hold.
    for (const tensor of read.tensors) check(tensor.toFloat32().length === tensor.numel, 'tensor data length != shape');
  },
};

export const FUZZ_TARGETS: readonly FuzzTarget[] = [safetensors, npy, tarShards, yamlConfig, jsonlManifest, csvManifest, tokenizerJson, onnxModel, torchSave];

/** Input `index` of a run of `target`: a mutation of its seeds, every other one repaired when the format has a check. */
export function fuzzInput(target: FuzzTarget, seeds: readonly Uint8Array[], seed: number, index: number): Uint8Array {
  const bytes = mutatedInput(seeds, seed, index);
  return target.repair !== undefined && index % 2 === 1 ? target.repair(Uint8Array.from(bytes)) : bytes;
}

export function fuzzTarget(name: string): FuzzTarget {
  const target = FUZZ_TARGETS.find((t) => t.name === name);
  if (target === undefined) throw new Error(`fuzz: no target named ${name}`);
  return target;
}
