// ONNX export of dalle's models (written with protobufjs and the official onnx.proto) and running them through
// onnxruntime-node: `dalle export`, and `--runtime onnx` in `dalle encode` / `dalle decode` / `dalle generate`.
export * from './errors';
export * from './proto';
export * from './graph';
export * from './dvae-export';
export * from './runtime';
export * from './dvae-runner';
export * from './verify';
export * from './prior-export';
export * from './prior-runner';
export * from './generate-models';
export * from './weights-check';
export * from './export-folder';
