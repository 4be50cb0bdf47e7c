import * as path from 'node:path';
import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';
import { CoreEmitter } from '../core/events';
import { planesToRgb, RgbImage, tileImages, writePng } from '../core/image/grid';
import { DECODE_GRID_FILE, DECODE_OUTPUT_RULE, decodedImageName, startDecodeFolder } from '../core/image/decode-folder';
import { claimOutputFolder } from '../core/io/output-folder';

export interface DecodeCommandResult {
  readonly out: string;
  readonly images: number;
  readonly files: string[];
  readonly grid?: string;
  readonly checkpoint: string;
}

/** Contact sheets show at most this many images (a sheet of thousands would be unreadable and huge). */
const GRID_MAX_IMAGES = 256;

export default class DecodeCommand extends BaseCommand<typeof DecodeCommand> {
  static override summary = 'Decode dVAE token grids (.npy, int32 (N, H, W)) into PNGs.';

  static override description =
    'Writes DIR/000000.png, 000001.png, ... (named by the index of the grid in the file) and, with --grid, ' +
    `DIR/grid.png, a contact sheet of the first ${GRID_MAX_IMAGES}; DIR/decode.json names the token file and the dVAE. ` +
    'DIR must be new, empty, or an earlier decode\'s (whose PNGs are replaced); a folder holding other files is ' +
    'refused before any work. A grid of the wrong size for the dVAE, or a token outside its vocabulary, is an error ' +
    'naming the position.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji data/emoji-tokens.npy --out /tmp/decoded --grid',
  ];

  static override args = {
    tokens: Args.string({ description: 'A .npy of token grids, as `dalle encode` writes.', required: true }),
  };

  static override flags = {
    dvae: Flags.string({ summary: 'A dVAE run directory (its latest checkpoint) or a checkpoint directory.', required: true, helpValue: 'RUN' }),
    out: Flags.string({ char: 'o', summary: 'Folder for the PNGs: new, empty, or an earlier decode\'s (created if missing).', required: true, helpValue: 'DIR' }),
    grid: Flags.boolean({ summary: 'Also write DIR/grid.png, a contact sheet.', default: false }),
    'batch-size': Flags.integer({ summary: 'Grids decoded at a time.', default: 16, min: 1 }),
    runtime: Flags.option({
      options: ['engine', 'onnx'] as const,
      default: 'engine' as const,
      summary: "Run the dVAE on dalle's engine, or through onnxruntime-node (ONNX graphs exported on the fly, or --onnx DIR).",
    })(),
    onnx: Flags.string({ summary: 'With --runtime onnx: the folder `dalle export --dvae` wrote, instead of exporting on the fly.', helpValue: 'DIR' }),
  };

  static override configUse: ConfigUse = { keys: ENGINE_KEYS, note: "the dVAE's settings come from the --dvae run" };

  async run(): Promise<DecodeCommandResult> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../core/runtime');
    const { decodeTokenGrids, readTokenGrids } = await import('../core/image/dvae-codec');
    const { loadDvae } = await import('../core/models/dvae/load');
    const runtime = this.loadConfig(dvaeConfig).runtime;
    const { device } = applyRuntime(runtime, 'decode');
    if (this.flags.onnx !== undefined && this.flags.runtime !== 'onnx') this.error('--onnx DIR needs --runtime onnx', { exit: 2 });
    const out = this.flags.out;
    // A --out that is another program's folder, or cannot be written, fails now, not at the first PNG.
    claimOutputFolder(out, DECODE_OUTPUT_RULE);
    const events = this.renderEvents(new CoreEmitter());
    this.lockFolder(this.flags.out, events);
    const dvae = loadDvae(this.flags.dvae, device);
    // --runtime onnx: the same dVAE as ONNX graphs, run by onnxruntime-node (loaded only then).
    let onnx: import('../core/onnx').OnnxDvae | undefined;
    try {
      if (this.flags.runtime === 'onnx') {
        const { openOnnxDvaeFor } = await import('../core/onnx');
        onnx = await openOnnxDvaeFor(dvae, this.flags.onnx, { threads: runtime.threads });
      }
      const grids = readTokenGrids(this.args.tokens, dvae.model.arch.vocab_size, dvae.gridSide);
      startDecodeFolder(out, { tokens: path.resolve(this.args.tokens), dvae: path.resolve(dvae.checkpoint), images: grids.shape[0], grid: this.flags.grid });
      const files: string[] = [];
      const sheet: RgbImage[] = [];
      const R = dvae.resolution;
      await decodeTokenGrids(dvae, grids, async (start, images, count) => {
        for (let i = 0; i < count; i++) {
          const rgb = planesToRgb(images, [count, 3, R, R], i);
          const file = path.join(out, decodedImageName(start + i));
          await writePng(file, rgb);
          files.push(file);
          if (this.flags.grid && sheet.length < GRID_MAX_IMAGES) sheet.push(rgb);
        }
      }, { batchSize: this.flags['batch-size'], events, decodeBatch: onnx && ((codes, n) => onnx!.decode(codes, n)) });
      let grid: string | undefined;
      if (this.flags.grid && sheet.length > 0) {
        grid = path.join(out, DECODE_GRID_FILE);
        await writePng(grid, tileImages(sheet));
        events.emit({ type: 'artifact', kind: 'image', path: grid });
      }
      this.log(`${files.length} images in ${out}${grid ? ` (contact sheet ${grid})` : ''}`);
      return { out, images: files.length, files, grid, checkpoint: dvae.checkpoint };
    } finally {
      await onnx?.release();
      dvae.model.dispose();
    }
  }
}
