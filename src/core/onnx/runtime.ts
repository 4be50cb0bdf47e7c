/**
 * Running ONNX graphs through onnxruntime-node (CPU execution provider), with every file checked before onnxruntime
 * sees it: exists, non-empty, under protobuf's 2 GiB, parses as a ModelProto, has a graph and an opset of the default
 * domain, keeps its weights inside, and has the inputs and outputs the caller expects (names and element types).
 * Each failure is an OnnxModelError naming the file, what is wrong and what to do.
 */
import * as fs from 'node:fs';
import type * as Ort from 'onnxruntime-node';
import { OnnxModelError, OnnxRuntimeUnavailableError } from './errors';
import { ModelProto, OnnxDataType, OnnxDataTypeName, decodeModel } from './proto';

/** protobuf messages (so .onnx files with their weights inside) cannot exceed 2 GiB. */
export const MAX_ONNX_FILE_BYTES = 2 ** 31 - 1;

let ort: typeof Ort | undefined;

/** onnxruntime-node, loaded on first use (so commands that do not use it never load its native library). */
export function loadOnnxRuntime(): typeof Ort {
  if (ort === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      ort = require('onnxruntime-node') as typeof Ort;
    } catch (error) {
      throw new OnnxRuntimeUnavailableError(
        `onnxruntime-node cannot be loaded: ${error instanceof Error ? error.message : String(error)}`,
        'install it (npm install onnxruntime-node; its CPU library ships in the package), or run with --runtime engine',
      );
    }
  }
  return ort;
}

export interface ExpectedValue {
  readonly name: string;
  readonly dtype: OnnxDataTypeName;
  /** Rank; unchecked when absent. */
  readonly rank?: number;
}

export interface ExpectedGraph {
  /** What the file should be, in words (for messages): 'the dVAE encoder'. */
  readonly what: string;
  readonly inputs: readonly ExpectedValue[];
  readonly outputs: readonly ExpectedValue[];
  /** The `dalle.role` metadata a dalle export carries (checked only when the file has dalle metadata). */
  readonly role?: string;
  /** What to do when the file is wrong. */
  readonly hint: string;
}

export interface CheckedOnnxFile {
  readonly file: string;
  readonly bytes: Uint8Array;
  readonly model: ModelProto;
  readonly metadata: Readonly<Record<string, string>>;
}

const DTYPE_NAMES = new Map<number, string>(Object.entries(OnnxDataType).map(([k, v]) => [v, k]));

function dtypeName(code: number | undefined): string {
  return code === undefined ? 'no type' : DTYPE_NAMES.get(code) ?? `data type ${code}`;
}

/** Reads and checks an .onnx file against what the caller will feed it and fetch from it. */
export function readOnnxFile(file: string, expected: ExpectedGraph): CheckedOnnxFile {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (stat === undefined) throw new OnnxModelError(`${expected.what}: ${file} does not exist`, expected.hint);
  if (!stat.isFile()) throw new OnnxModelError(`${expected.what}: ${file} is not a file`, expected.hint);
  if (stat.size === 0) throw new OnnxModelError(`${expected.what}: ${file} is empty (0 bytes)`, `the export was interrupted or the file was truncated; ${expected.hint}`);
  if (stat.size > MAX_ONNX_FILE_BYTES) {
    throw new OnnxModelError(
      `${expected.what}: ${file} is ${stat.size} bytes, over protobuf's 2 GiB limit for a model with its weights inside`,
      'models with external weight files are not supported; export a smaller model',
    );
  }
  const bytes = new Uint8Array(fs.readFileSync(file));
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (error) {
    throw new OnnxModelError(
      `${expected.what}: ${file} (${bytes.length} bytes) is not an ONNX model: protobuf parsing failed (${error instanceof Error ? error.message : String(error)})`,
      `the file is damaged, truncated or of another format; ${expected.hint}`,
    );
  }
  // Protobuf parses many byte strings without error; an ONNX model must at least have these.
  const problems: string[] = [];
  if (!(typeof model.ir_version === 'number' && model.ir_version > 0)) problems.push('no ir_version');
  if (!model.graph) problems.push('no graph');
  if (!(model.opset_import ?? []).some((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx')) problems.push('no opset of the default ONNX domain');
  if (problems.length > 0) {
    throw new OnnxModelError(`${expected.what}: ${file} is not an ONNX model (${problems.join(', ')})`, `the file is damaged or of another format; ${expected.hint}`);
  }
  const graph = model.graph!;
  const external = (graph.initializer ?? []).filter((t) => t.data_location === 1).map((t) => t.name);
  if (external.length > 0) {
    throw new OnnxModelError(
      `${expected.what}: ${file} keeps ${external.length} weight tensors in external files (${external.slice(0, 3).join(', ')}${external.length > 3 ? ', ...' : ''})`,
      'only models with their weights inside the .onnx file are supported; re-export it with the weights inside',
    );
  }
  const metadata: Record<string, string> = {};
  for (const { key, value } of model.metadata_props ?? []) metadata[key] = value;
  if (expected.role !== undefined && metadata['dalle.role'] !== undefined && metadata['dalle.role'] !== expected.role) {
    throw new OnnxModelError(`${expected.what}: ${file} is a ${metadata['dalle.role']} graph, not ${expected.role}`, expected.hint);
  }
  const check = (kind: 'input' | 'output', have: typeof graph.input, want: readonly ExpectedValue[]): void => {
    for (const w of want) {
      const v = (have ?? []).find((x) => x.name === w.name);
      const names = (have ?? []).map((x) => x.name).join(', ') || 'none';
      if (v === undefined) throw new OnnxModelError(`${expected.what}: ${file} has no ${kind} named "${w.name}" (its ${kind}s: ${names})`, expected.hint);
      const t = v.type?.tensor_type;
      if (t?.elem_type !== OnnxDataType[w.dtype]) {
        throw new OnnxModelError(`${expected.what}: ${file}: ${kind} "${w.name}" is ${dtypeName(t?.elem_type)}, expected ${w.dtype}`, expected.hint);
      }
      const rank = t.shape?.dim?.length;
      if (w.rank !== undefined && rank !== undefined && rank !== w.rank) {
        throw new OnnxModelError(`${expected.what}: ${file}: ${kind} "${w.name}" has rank ${rank}, expected ${w.rank}`, expected.hint);
      }
    }
  };
  check('input', graph.input, expected.inputs);
  check('output', graph.output, expected.outputs);
  return { file, bytes, model, metadata };
}

export interface SessionOptions {
  /** Intra-op threads; 0 or absent = onnxruntime's default (all cores). */
  readonly threads?: number;
}

/** An onnxruntime session on a checked file; onnxruntime's own load errors become OnnxModelErrors naming the file. */
export async function createSession(checked: CheckedOnnxFile, expected: ExpectedGraph, options: SessionOptions = {}): Promise<Ort.InferenceSession> {
  const rt = loadOnnxRuntime();
  const sessionOptions: Ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    interOpNumThreads: 1,
    ...(options.threads && options.threads > 0 ? { intraOpNumThreads: options.threads } : {}),
  };
  try {
    return await rt.InferenceSession.create(checked.bytes, sessionOptions);
  } catch (error) {
    throw new OnnxModelError(
      `${expected.what}: onnxruntime ${rt.env.versions.node} cannot load ${checked.file}: ${error instanceof Error ? error.message : String(error)}`,
      expected.hint,
    );
  }
}
