// The bundled default models (models/default/{prior,dvae} in the package): what generate and evaluate nll use when
// --prior / --dvae are not given.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const DEFAULT_MODEL_DIR = path.join('models', 'default');

/** The --prior / --dvae path given, or the bundled one under the package root; a clear error when neither exists. */
export async function modelPathOrBundled(root: string, flag: 'prior' | 'dvae', given: string | undefined): Promise<string> {
  if (given !== undefined) return given;
  const { CheckpointError } = await import('../core/checkpoint'); // lazily: commands load the engine only in run()
  const bundled = path.join(root, DEFAULT_MODEL_DIR, flag);
  if (!fs.existsSync(bundled)) {
    throw new CheckpointError(
      `no --${flag} given, and there is no bundled default ${flag} at ${bundled}`,
      'pass --prior RUN (a run of `dalle train-prior`) and --dvae RUN (the dVAE run it was trained on), or install a package that ships models/default/',
    );
  }
  return bundled;
}
