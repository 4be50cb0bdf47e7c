import * as path from 'node:path';
import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';
import { SkipSummary } from '../core/data/skips';
import { CoreEmitter } from '../core/events';
import { writeFileAtomicSync } from '../core/io/atomic';
import { writeNpySync } from '../core/io/npy';
import { makeOutputFolder, preflightOutputFile } from '../core/io/preflight';

export interface EncodeCommandResult {
  readonly tokens: string;
  readonly inputs: string;
  readonly shape: [number, number, number];
  readonly checkpoint: string;
  readonly skipped: SkipSummary;
}

/** An upper bound on the header of a .npy of int32 (N, H, W): magic, version, length and the padded dict. */
const NPY_HEADER_BYTES = 256;

/** `tokens.npy` -> `tokens.inputs.txt`. */
export function inputsListPath(tokensFile: string): string {
  return path.join(path.dirname(tokensFile), `${path.basename(tokensFile, path.extname(tokensFile))}.inputs.txt`);
}

export default class EncodeCommand extends BaseCommand<typeof EncodeCommand> {
  static override summary = 'Encode images into dVAE token grids: an int32 (N, H, W) .npy that NumPy reads directly.';

  static override description =
    'INPUT... are image files, folders of images, .jsonl/.csv manifests or .tar shards, encoded in the order given ' +
    '(argmax codes, no noise: what the prior trains on). Writes --out (int32, shape (N, H, W)) and, beside it, ' +
    'NAME.inputs.txt with the input of each grid, one per line. Inputs that cannot be read are skipped and reported. ' +
    'The folder of --out is created if missing; a --out that cannot be written (a folder, a read-only disk, too little ' +
    'free space for the grids) fails before anything is encoded.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji data/emoji/train --out data/emoji-tokens.npy',
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji/checkpoints/step-20000 a.png b.png --out ab.npy',
  ];

  static override strict = false;

  static override args = {
    input: Args.string({ description: 'Images, folders, manifests or .tar shards.', required: true }),
  };

  static override flags = {
    dvae: Flags.string({ summary: 'A dVAE run directory (its latest checkpoint) or a checkpoint directory.', required: true, helpValue: 'RUN' }),
    out: Flags.string({ char: 'o', summary: 'The .npy file to write.', required: true, helpValue: 'FILE' }),
    'batch-size': Flags.integer({ summary: 'Images encoded at a time.', default: 16, min: 1 }),
    runtime: Flags.option({
      options: ['engine', 'onnx'] as const,
      default: 'engine' as const,
      summary: "Run the dVAE on dalle's engine, or through onnxruntime-node (ONNX graphs exported on the fly, or --onnx DIR).",
    })(),
    onnx: Flags.string({ summary: 'With --runtime onnx: the folder `dalle export --dvae` wrote, instead of exporting on the fly.', helpValue: 'DIR' }),
  };

  static override configUse: ConfigUse = { keys: ENGINE_KEYS, note: "the dVAE's settings come from the --dvae run" };

  async run(): Promise<EncodeCommandResult> {
    const inputs = (await this.parse(EncodeCommand, this.argv)).argv as string[];
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../core/runtime');
    const { encodeImages } = await import('../core/image/dvae-codec');
    const { loadDvae } = await import('../core/models/dvae/load');
    const runtime = this.loadConfig(dvaeConfig).runtime;
    const { device } = applyRuntime(runtime, 'encode');
    if (this.flags.onnx !== undefined && this.flags.runtime !== 'onnx') this.error('--onnx DIR needs --runtime onnx', { exit: 2 });
    // A path that cannot be written fails now, not after the encoding (both files go in the folder of --out).
    const out = this.flags.out;
    const list = inputsListPath(out);
    preflightOutputFile(out);
    preflightOutputFile(list, { flag: `--out's input list` });
    const events = this.renderEvents(new CoreEmitter());
    const dvae = loadDvae(this.flags.dvae, device);
    // --runtime onnx: the same dVAE as ONNX graphs, run by onnxruntime-node (loaded only then).
    let onnx: import('../core/onnx').OnnxDvae | undefined;
    try {
      if (this.flags.runtime === 'onnx') {
        const { openOnnxDvaeFor } = await import('../core/onnx');
        onnx = await openOnnxDvaeFor(dvae, this.flags.onnx, { threads: runtime.threads });
      }
      // Once the images are counted, the size of the .npy is known: too little free space fails before encoding.
      const gridBytes = 4 * dvae.gridSide * dvae.gridSide;
      const beforeEncoding = (images: number): void => preflightOutputFile(out, { bytes: NPY_HEADER_BYTES + images * gridBytes });
      const result = await encodeImages(dvae, inputs, { batchSize: this.flags['batch-size'], events, encodeBatch: onnx && ((pixels, n) => onnx!.encode(pixels, n)), beforeEncoding });
      makeOutputFolder(path.dirname(out));
      writeNpySync(out, { dtype: 'i32', shape: result.shape, data: result.tokens });
      writeFileAtomicSync(list, result.names.map((name) => `${name}\n`).join(''));
      events.emit({ type: 'artifact', kind: 'tokens', path: out });
      const [N, H, W] = result.shape;
      this.log(`${N} token grids of ${H}x${W} in ${out} (inputs listed in ${list})`);
      if (result.skipped.total > 0) {
        this.warn(`skipped ${result.skipped.total}: ${result.skipped.examples.map((e) => `${e.id} (${e.reason})`).join(', ')}`);
      }
      return { tokens: out, inputs: list, shape: result.shape, checkpoint: dvae.checkpoint, skipped: result.skipped };
    } finally {
      await onnx?.release();
      dvae.model.dispose();
    }
  }
}
