import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, ENGINE_KEYS } from '../cli/config-use';
import { dvaeConfig } from '../core/config';

export interface ExportCommandResult {
  readonly out: string;
  readonly dvae?: {
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
  };
  readonly prior?: {
    readonly checkpoint: string;
    readonly step: number;
    readonly files: { readonly prior: string; readonly info: string };
    readonly bytes: number;
    readonly check?: { readonly rows: number; readonly positions: number; readonly logitsMaxAbsDiff: number };
  };
  readonly clip?: {
    readonly checkpoint: string;
    readonly step: number;
    readonly files: { readonly text: string; readonly vision: string; readonly tokenizer: string; readonly preprocessor: string; readonly config: string };
    readonly bytes: { readonly text: number; readonly vision: number };
    readonly check?: { readonly captions: number; readonly images: number; readonly textMaxAbsDiff: number; readonly imageMaxAbsDiff: number };
  };
}

/** Agreement the check demands: f32 graphs of the same ops as the engine. */
const CHECK_TOLERANCE = 1e-4;

function megabytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 1)} MiB`;
}

export default class ExportCommand extends BaseCommand<typeof ExportCommand> {
  static override summary = 'Export a trained dVAE and/or prior to ONNX (opset 17, f32 weights inside) for onnxruntime and other runtimes.';

  static override description =
    'With --dvae: DIR/dvae-encoder.onnx (pixels float32 (N, 3, H, W) in [0, 1] -> logits (N, V, H/f, W/f) and argmax ' +
    'codes int32 (N, H/f, W/f)), DIR/dvae-decoder.onnx (codes int32 (N, h, w) -> pixels float32 (N, 3, f h, f w) in ' +
    '[0, 1]) and DIR/dvae.json. With --prior: DIR/prior.onnx (input_ids int32 (B, T) and past_key_i / past_value_i ' +
    '(B, H, P, D) of every layer -> logits of the next image token (B, V) and present_key_i / present_value_i) and ' +
    'DIR/prior.json (architecture, and the offset added to image token ids). Then runs every graph through ' +
    `onnxruntime-node on random inputs and checks it against dalle's engine (max abs difference under ${CHECK_TOLERANCE}); ` +
    '--no-check skips that. `dalle encode` / `dalle decode` run a dVAE export with --runtime onnx --onnx DIR. With ' +
    '--clip: a Hugging Face-style CLIP export, DIR/text_model.onnx (input_ids, attention_mask int64 (B, T) -> ' +
    'text_embeds (B, E)), DIR/vision_model.onnx (pixel_values float32 (B, 3, S, S), normalised -> image_embeds (B, E)), ' +
    'tokenizer.json, preprocessor_config.json and config.json, which `--clip DIR` opens like the run.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji --out runs/dvae-emoji/onnx',
    '<%= config.bin %> <%= command.id %> --dvae runs/dvae-emoji --prior runs/prior-emoji --out /tmp/dalle-onnx --json',
    '<%= config.bin %> <%= command.id %> --clip runs/clip-emoji --out runs/clip-emoji/onnx',
  ];

  static override flags = {
    dvae: Flags.string({ summary: 'A dVAE run directory (its latest checkpoint) or a checkpoint directory.', helpValue: 'RUN' }),
    prior: Flags.string({ summary: 'A prior run directory (its latest checkpoint) or a checkpoint directory.', helpValue: 'RUN' }),
    clip: Flags.string({ summary: 'A CLIP run directory (its best or latest checkpoint) or a checkpoint directory.', helpValue: 'RUN' }),
    out: Flags.string({ char: 'o', summary: 'Folder for the .onnx files: new, empty, or an earlier export (its files are replaced); created if missing.', required: true, helpValue: 'DIR' }),
    check: Flags.boolean({ summary: "Run the export through onnxruntime and compare it with dalle's engine.", default: true, allowNo: true }),
  };

  static override configUse: ConfigUse = { keys: [...ENGINE_KEYS, 'runtime.seed'], note: "the models' settings come from the runs exported" };

  async run(): Promise<ExportCommandResult> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    if (this.flags.dvae === undefined && this.flags.prior === undefined && this.flags.clip === undefined) {
      this.error('nothing to export: give --dvae RUN, --prior RUN, or both, and/or --clip RUN', { exit: 2 });
    }
    const { applyRuntime } = await import('../core/runtime');
    const runtime = this.loadConfig(dvaeConfig).runtime;
    applyRuntime(runtime);
    // --out is new, empty or an earlier export, and writable: checked before any model is loaded.
    const { claimOutputFolder } = await import('../core/io/output-folder');
    const { EXPORT_OUTPUT_RULE } = await import('../core/onnx/export-folder');
    claimOutputFolder(this.flags.out, EXPORT_OUTPUT_RULE);
    this.lockFolder(this.flags.out);
    const dvae = this.flags.dvae !== undefined ? await this.exportDvae(this.flags.dvae, runtime) : undefined;
    const prior = this.flags.prior !== undefined ? await this.exportPrior(this.flags.prior, runtime) : undefined;
    const clip = this.flags.clip !== undefined ? await this.exportClip(this.flags.clip, runtime) : undefined;
    return { out: this.flags.out, dvae, prior, clip };
  }

  private async exportClip(target: string, runtime: { threads: number; seed: number }): Promise<ExportCommandResult['clip']> {
    const { loadClip } = await import('../core/models/clip/load');
    const { exportClipOnnx } = await import('../core/onnx/clip-export');
    const { OnnxClip } = await import('../core/onnx/clip-runner');
    const { verifyClipExport } = await import('../core/onnx/clip-verify');
    const clip = loadClip(target);
    try {
      const written = exportClipOnnx({ model: clip.model, tokenizer: clip.tokenizer, tokenizerFile: clip.tokenizerFile, checkpoint: clip.checkpoint, step: clip.step }, this.flags.out);
      this.log(
        `CLIP of ${clip.checkpoint} (update ${clip.step}) in ${written.dir}: text_model.onnx (${megabytes(written.bytes.text)}), ` +
          `vision_model.onnx (${megabytes(written.bytes.vision)}), tokenizer.json, preprocessor_config.json, config.json (logit_scale ${written.logitScale.toFixed(2)})`,
      );
      let check: NonNullable<ExportCommandResult['clip']>['check'];
      if (this.flags.check) {
        const runner = await OnnxClip.open(written.dir, { threads: runtime.threads });
        try {
          check = await verifyClipExport(clip, runner, { seed: runtime.seed });
        } finally {
          await runner.release();
        }
        const line =
          `CLIP: onnxruntime vs engine on ${check.captions} captions and ${check.images} random images: max |text embedding diff| ` +
          `${check.textMaxAbsDiff.toExponential(2)}, max |image embedding diff| ${check.imageMaxAbsDiff.toExponential(2)}`;
        if (!(check.textMaxAbsDiff < CHECK_TOLERANCE && check.imageMaxAbsDiff < CHECK_TOLERANCE)) {
          this.error(`the ONNX export disagrees with the engine: ${line} (tolerance ${CHECK_TOLERANCE})`, { exit: 5 });
        }
        this.log(line);
      }
      return { checkpoint: clip.checkpoint, step: clip.step, files: written.files, bytes: written.bytes, check };
    } finally {
      clip.model.dispose();
    }
  }

  private async exportDvae(target: string, runtime: { threads: number; seed: number }): Promise<ExportCommandResult['dvae']> {
    const { loadDvae } = await import('../core/models/dvae/load');
    const { OnnxDvae, exportDvaeOnnx, verifyDvaeExport } = await import('../core/onnx');
    const dvae = loadDvae(target);
    try {
      const written = exportDvaeOnnx(dvae, this.flags.out);
      this.log(
        `dVAE of ${dvae.checkpoint} (update ${dvae.step}) in ${written.dir}: ${written.files.encoder} (${megabytes(written.bytes.encoder)}), ` +
          `${written.files.decoder} (${megabytes(written.bytes.decoder)}), ${written.files.info}`,
      );
      let check: NonNullable<ExportCommandResult['dvae']>['check'];
      if (this.flags.check) {
        const runner = await OnnxDvae.open(written.dir, { threads: runtime.threads, expectArch: dvae.model.arch });
        try {
          check = await verifyDvaeExport(dvae, runner, { images: 2, seed: runtime.seed });
        } finally {
          await runner.release();
        }
        const line =
          `dVAE: onnxruntime vs engine on ${check.images} random ${check.resolution}px images: max |logits diff| ${check.logitsMaxAbsDiff.toExponential(2)}, ` +
          `codes agree on ${(100 * check.codesAgreement).toFixed(2)}% of cells, max |pixel diff| ${check.pixelsMaxAbsDiff.toExponential(2)}`;
        if (!(check.logitsMaxAbsDiff < CHECK_TOLERANCE && check.pixelsMaxAbsDiff < CHECK_TOLERANCE)) {
          this.error(`the ONNX export disagrees with the engine: ${line} (tolerance ${CHECK_TOLERANCE})`, { exit: 5 });
        }
        this.log(line);
      }
      return { checkpoint: dvae.checkpoint, step: dvae.step, files: written.files, bytes: written.bytes, check };
    } finally {
      dvae.model.dispose();
    }
  }

  private async exportPrior(target: string, runtime: { threads: number; seed: number }): Promise<ExportCommandResult['prior']> {
    const { loadPrior } = await import('../core/models/prior/load');
    const { OnnxPrior, exportPriorOnnx, verifyPriorExport } = await import('../core/onnx');
    const prior = loadPrior(target);
    try {
      const written = exportPriorOnnx({ model: prior.model, arch: prior.config.model, checkpoint: prior.checkpoint, step: prior.step }, this.flags.out);
      this.log(`prior of ${prior.checkpoint} (update ${prior.step}) in ${written.dir}: ${written.files.prior} (${megabytes(written.bytes)}), ${written.files.info}`);
      let check: NonNullable<ExportCommandResult['prior']>['check'];
      if (this.flags.check) {
        const runner = await OnnxPrior.open(written.dir, { threads: runtime.threads, expectArch: prior.config.model });
        try {
          check = await verifyPriorExport(prior.model, runner, { rows: 2, seed: runtime.seed });
        } finally {
          await runner.release();
        }
        const line =
          `prior: onnxruntime vs engine (KV cache, prefill then a step per position) on ${check.rows} random captions over ` +
          `${check.positions} image positions: max |logits diff| ${check.logitsMaxAbsDiff.toExponential(2)}`;
        if (!(check.logitsMaxAbsDiff < CHECK_TOLERANCE)) this.error(`the ONNX export disagrees with the engine: ${line} (tolerance ${CHECK_TOLERANCE})`, { exit: 5 });
        this.log(line);
      }
      return { checkpoint: prior.checkpoint, step: prior.step, files: written.files, bytes: written.bytes, check };
    } finally {
      prior.model.dispose();
    }
  }
}
