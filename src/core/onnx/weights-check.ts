/**
 * Whether an export folder was made from the model named beside it (`--dvae RUN --onnx DIR`, `--prior RUN --onnx DIR`):
 * dvae.json and prior.json record the weights digest of the model they were exported from (nn/weights-digest.ts), and
 * it must equal the digest of the model given. An export that records none (made by an older dalle) cannot be checked,
 * and is refused rather than trusted: running it would give another model's outputs without a word.
 */
import { OnnxModelError } from './errors';

/** The model an export must come from, and what the user can do when it does not. */
export interface ExpectedWeights {
  /** The checkpoint directory given, its update count and its weights digest. */
  readonly checkpoint: string;
  readonly step: number;
  readonly weightsSha256: string;
  /** The command that exports the given model into the folder, e.g. `dalle export --dvae RUN --out DIR`. */
  readonly reexport: string;
  /** The other way out, e.g. 'leave --onnx out to export --dvae on the fly'. */
  readonly otherwise: string;
}

/** What an export description says it was made from (weightsSha256 absent in exports of older versions). */
export interface ExportedFrom {
  readonly checkpoint: string;
  readonly step: number;
  readonly weightsSha256?: string;
}

/**
 * Throws an OnnxModelError (exit 4) unless `exported` (read from `file` in `dir`) records the weights `expected` has.
 * `what` names the model in messages ('dVAE', 'prior').
 */
export function checkExportedWeights(what: string, dir: string, file: string, exported: ExportedFrom, expected: ExpectedWeights): void {
  const recorded = exported.weightsSha256;
  if (typeof recorded !== 'string' || !/^[0-9a-f]{64}$/.test(recorded)) {
    throw new OnnxModelError(
      `${file} does not record the weights the ${what} in ${dir} was exported from (an export made by an older dalle), so it cannot be checked against the ${what} given (${expected.checkpoint}, update ${expected.step})`,
      `export it again: ${expected.reexport}; or ${expected.otherwise}`,
    );
  }
  if (recorded !== expected.weightsSha256) {
    throw new OnnxModelError(
      `the ${what} exported in ${dir} (from ${exported.checkpoint}, update ${exported.step}) is not the ${what} given (${expected.checkpoint}, update ${expected.step}): ` +
        `their weights differ (sha256 ${recorded.slice(0, 12)}... in ${file}, ${expected.weightsSha256.slice(0, 12)}... given)`,
      `export the ${what} you run with: ${expected.reexport}; or ${expected.otherwise}`,
    );
  }
}
