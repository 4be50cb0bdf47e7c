import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { dvaeConfig } from '../core/config';

export interface ExportCommandResult {
  readonly out: string;
  readonly checkpoint: string;
  readonly step: number;
  readonly files: { readonly encoder: string; readonly decoder: string; readonly info: string };
  readonly bytes: { readonly encoder: number; readonly decoder: number };
  /** The check against the engine on random inputs (absent with --no-check). */
  readonly check?: {
    readonly images: number;
    readonly resolution: number;
    readonly logitsMaxAbsDiff: number;
    readonly codesAgreement: number;
    readonly pixelsMaxAbsDiff: number;
  };
}

/** Agreement the check demands: f32 graphs of the same ops as the engine. */
const CHECK_TOLERANCE = 1e-4;

function megabytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 1)} MiB`;
}

export default class ExportCommand extends BaseCommand<typeof ExportCommand> {
  static override summary = 'Export a trained dVAE to ONNX (opset 17, f32 weights inside) for onnxruntime and other runtimes.';

  static override description =
    'Writes DIR/dvae-encoder.onnx (pixels float32 (N, 3, H, W) in [0, 1] -> logits (N, V, H/f, W/f) and argmax ' +
    'codes int32 (N, H/f, W/f)), DIR/dvae-decoder.onnx (codes int32 (N, h, w) -> pixels float32 (N, 3, f h, f w) in ' +
    '[0, 1]) and DIR/dvae.json (architecture, checkpoint). Then runs both graphs through onnxruntime-node on random ' +
    `inputs and checks them against dalle's engine (max abs difference under ${CHECK_TOLERANCE}); --no-check skips ` +
    'that. `dalle encode` / `dalle decode` run the export with --runtime onnx --onnx DIR.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji --out runs/dvae-emoji/onnx',
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji/checkpoints/step-5000 --out /tmp/dvae-onnx --json',
  ];

  static override flags = {
    dvae: Flags.string({ summary: 'A dVAE run directory (its latest checkpoint) or a checkpoint directory.', required: true, helpValue: 'RUN' }),
    out: Flags.string({ char: 'o', summary: 'Folder for the .onnx files (created if missing; files in it are replaced).', required: true, helpValue: 'DIR' }),
    check: Flags.boolean({ summary: "Run the export through onnxruntime and compare it with dalle's engine.", default: true, allowNo: true }),
  };

  async run(): Promise<ExportCommandResult> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { applyRuntime } = await import('../core/runtime');
    const { loadTrainedDvae } = await import('../core/image/dvae-codec');
    const { OnnxDvae, exportDvaeOnnx, verifyDvaeExport } = await import('../core/onnx');
    const runtime = this.loadConfig(dvaeConfig).runtime;
    applyRuntime(runtime);
    const dvae = loadTrainedDvae(this.flags.dvae);
    try {
      const written = exportDvaeOnnx(dvae, this.flags.out);
      this.log(
        `dVAE of ${dvae.checkpoint} (update ${dvae.step}) in ${written.dir}: ${written.files.encoder} (${megabytes(written.bytes.encoder)}), ` +
          `${written.files.decoder} (${megabytes(written.bytes.decoder)}), ${written.files.info}`,
      );
      let check: ExportCommandResult['check'];
      if (this.flags.check) {
        const runner = await OnnxDvae.open(written.dir, { threads: runtime.threads, expectArch: dvae.model.arch });
        try {
          check = await verifyDvaeExport(dvae, runner, { images: 2, seed: runtime.seed });
        } finally {
          await runner.release();
        }
        const line =
          `onnxruntime vs engine on ${check.images} random ${check.resolution}px images: max |logits diff| ${check.logitsMaxAbsDiff.toExponential(2)}, ` +
          `codes agree on ${(100 * check.codesAgreement).toFixed(2)}% of cells, max |pixel diff| ${check.pixelsMaxAbsDiff.toExponential(2)}`;
        if (!(check.logitsMaxAbsDiff < CHECK_TOLERANCE && check.pixelsMaxAbsDiff < CHECK_TOLERANCE)) {
          this.error(`the ONNX export disagrees with the engine: ${line} (tolerance ${CHECK_TOLERANCE})`, { exit: 5 });
        }
        this.log(line);
      }
      return { out: written.dir, checkpoint: dvae.checkpoint, step: dvae.step, files: written.files, bytes: written.bytes, check };
    } finally {
      dvae.model.dispose();
    }
  }
}
