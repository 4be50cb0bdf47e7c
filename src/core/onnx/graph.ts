/**
 * A small builder for ONNX graphs: nodes with generated value names, f32/i32/i64 initializers (raw little-endian
 * bytes), typed graph inputs and outputs with symbolic dims ('N', 'H', ...), and the ModelProto around them.
 * The exporters (dvae-export.ts) call it op by op, mirroring the engine's forward code line for line.
 */
import {
  AttributeProto,
  ModelProto,
  NodeProto,
  OnnxAttributeType,
  OnnxDataType,
  OnnxDataTypeName,
  TensorProto,
  ValueInfoProto,
} from './proto';

/** The ONNX operator set the graphs are written for (Resize, ArgMax, Gather, Clip, Slice with tensor inputs: >= 13). */
export const ONNX_OPSET = 17;
/** IR version 8 (ONNX 1.10+): what opset 17 needs, readable by every onnxruntime since 1.10. */
export const ONNX_IR_VERSION = 8;

export type AttrValue =
  | { readonly int: number }
  | { readonly ints: readonly number[] }
  | { readonly float: number }
  | { readonly floats: readonly number[] }
  | { readonly string: string };

export type Dim = number | string;

function attribute(name: string, value: AttrValue): AttributeProto {
  if ('int' in value) return { name, type: OnnxAttributeType.INT, i: value.int };
  if ('ints' in value) return { name, type: OnnxAttributeType.INTS, ints: [...value.ints] };
  if ('float' in value) return { name, type: OnnxAttributeType.FLOAT, f: value.float };
  if ('floats' in value) return { name, type: OnnxAttributeType.FLOATS, floats: [...value.floats] };
  return { name, type: OnnxAttributeType.STRING, s: new TextEncoder().encode(value.string) };
}

function valueInfo(name: string, dtype: OnnxDataTypeName, shape: readonly Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: OnnxDataType[dtype],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
      },
    },
  };
}

/** Constant data: f32, i32, i64, or bool (a Uint8Array of 0 / 1). */
export type ConstantData = Float32Array | Int32Array | BigInt64Array | Uint8Array;

function rawBytes(data: ConstantData): Uint8Array {
  // ONNX raw_data is little-endian; so is every platform Node runs dalle on (x86-64, arm64).
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
}

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private counter = 0;

  constructor(readonly name: string) {}

  /** A fresh value name with a readable prefix (e.g. 'encoder.blocks.input/Conv_3'). */
  private fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.used.has(name));
    this.used.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.used.has(name)) throw new Error(`dalle: internal error: ONNX value ${name} defined twice`);
    this.used.add(name);
    return name;
  }

  input(name: string, dtype: OnnxDataTypeName, shape: readonly Dim[]): string {
    this.inputs.push(valueInfo(this.claim(name), dtype, shape));
    return name;
  }

  /** Marks `value` as a graph output named `name` (an Identity node renames it when the names differ). */
  output(value: string, name: string, dtype: OnnxDataTypeName, shape: readonly Dim[]): string {
    const out = value === name ? name : this.node('Identity', [value], {}, name);
    this.outputs.push(valueInfo(out, dtype, shape));
    return out;
  }

  /** A constant tensor stored as an initializer (weights, shapes, scalars). */
  constant(name: string, data: ConstantData, dims: readonly number[]): string {
    const size = dims.reduce((a, b) => a * b, 1);
    if (size !== data.length) throw new Error(`dalle: internal error: initializer ${name} has ${data.length} values for dims [${dims.join(', ')}]`);
    const dataType = data instanceof Float32Array ? OnnxDataType.FLOAT
      : data instanceof Int32Array ? OnnxDataType.INT32
      : data instanceof Uint8Array ? OnnxDataType.BOOL
      : OnnxDataType.INT64;
    this.initializers.push({ name: this.claim(name), dims: [...dims], data_type: dataType, raw_data: rawBytes(data) });
    return name;
  }

  scalar(name: string, value: number): string {
    return this.constant(name, Float32Array.of(value), []);
  }

  int64s(name: string, values: readonly number[]): string {
    return this.constant(name, BigInt64Array.from(values.map((v) => BigInt(v))), [values.length]);
  }

  /** Adds a node; returns the name of its (first) output, `outName` or a fresh one. */
  node(opType: string, inputs: readonly string[], attrs: Readonly<Record<string, AttrValue>> = {}, outName?: string): string {
    const out = outName !== undefined ? this.claim(outName) : this.fresh(opType);
    this.nodes.push({
      op_type: opType,
      name: `${opType}_${this.nodes.length}`,
      input: [...inputs],
      output: [out],
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return out;
  }

  /** The model: this graph, opset ONNX_OPSET of the default domain, and string metadata (key -> value). */
  toModel(metadata: Readonly<Record<string, string>>, docString = ''): ModelProto {
    return {
      ir_version: ONNX_IR_VERSION,
      opset_import: [{ domain: '', version: ONNX_OPSET }],
      producer_name: 'dalle',
      producer_version: '0.1.0',
      doc_string: docString,
      graph: { name: this.name, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
      metadata_props: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    };
  }
}
