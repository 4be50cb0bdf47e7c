/**
 * ONNX files through protobufjs and the official schema (onnx.proto, vendored beside this file): ModelProto <-> bytes.
 * Only the fields dalle writes or checks are typed below; the schema itself covers the whole format, so a foreign file
 * with other fields still parses. Field names keep the schema's snake_case (keepCase), as in the ONNX docs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

/** TensorProto.DataType values dalle uses. */
export const OnnxDataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9 } as const;
export type OnnxDataTypeName = keyof typeof OnnxDataType;

/** AttributeProto.AttributeType values. */
export const OnnxAttributeType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

export interface TensorProto {
  name?: string;
  dims?: number[];
  data_type?: number;
  raw_data?: Uint8Array;
  float_data?: number[];
  int32_data?: number[];
  int64_data?: number[];
  data_location?: number;
  external_data?: StringStringEntryProto[];
}

export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  floats?: number[];
  ints?: number[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  op_type: string;
  domain?: string;
  attribute?: AttributeProto[];
}

export interface DimensionProto {
  dim_value?: number;
  dim_param?: string;
}

export interface TypeProto {
  tensor_type?: { elem_type?: number; shape?: { dim?: DimensionProto[] } };
}

export interface ValueInfoProto {
  name: string;
  type?: TypeProto;
  doc_string?: string;
}

export interface StringStringEntryProto {
  key: string;
  value: string;
}

export interface GraphProto {
  name?: string;
  node?: NodeProto[];
  initializer?: TensorProto[];
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  doc_string?: string;
}

export interface OperatorSetIdProto {
  domain?: string;
  version: number;
}

export interface ModelProto {
  ir_version?: number;
  opset_import?: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props?: StringStringEntryProto[];
}

/** Where the vendored schema is: dist/src/core/onnx/proto.js and src/core/onnx/proto.ts both sit 4 levels down. */
export function onnxSchemaPath(): string {
  const beside = path.join(__dirname, 'onnx.proto');
  if (fs.existsSync(beside)) return beside;
  return path.resolve(__dirname, '..', '..', '..', '..', 'src', 'core', 'onnx', 'onnx.proto');
}

let modelType: protobuf.Type | undefined;

/** onnx.ModelProto from the vendored schema (parsed once). */
export function modelProtoType(): protobuf.Type {
  if (modelType === undefined) {
    const file = onnxSchemaPath();
    if (!fs.existsSync(file)) {
      throw new Error(`dalle: the ONNX schema ${file} is missing from this installation (it ships in src/core/onnx/onnx.proto); reinstall dalle`);
    }
    const root = new protobuf.Root().loadSync(file, { keepCase: true });
    modelType = root.lookupType('onnx.ModelProto');
  }
  return modelType;
}

/** ModelProto (plain object) -> the bytes of an .onnx file. */
export function encodeModel(model: ModelProto): Uint8Array {
  const type = modelProtoType();
  const problem = type.verify(model);
  if (problem) throw new Error(`dalle: internal error: the ONNX model does not match onnx.proto: ${problem}`);
  return type.encode(type.fromObject(model)).finish();
}

/**
 * Bytes -> ModelProto (plain object; int64 as numbers, enums as numbers, bytes as Uint8Array views).
 * Throws protobufjs's error (truncation, bad wire type) for bytes that are not a ModelProto; callers add the file name.
 */
export function decodeModel(bytes: Uint8Array): ModelProto {
  const type = modelProtoType();
  const message = type.decode(bytes);
  return type.toObject(message, { longs: Number, enums: Number, defaults: false, arrays: true }) as ModelProto;
}
