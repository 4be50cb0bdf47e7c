/** An ONNX file that cannot be used (missing, empty, too large, not ONNX, not the graph expected); exit code 4. */
export class OnnxModelError extends Error {
  override readonly name = 'OnnxModelError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** onnxruntime-node is missing or cannot load its native library here; exit code 5 (the job cannot run). */
export class OnnxRuntimeUnavailableError extends Error {
  override readonly name = 'OnnxRuntimeUnavailableError';

  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}
