import { Flags } from '@oclif/core';
import { BaseCommand } from '../../cli/base-command';
import { ConfigUse, NO_CONFIG } from '../../cli/config-use';

export interface ConvertOpenAiDvaeResult {
  readonly out: string;
  readonly checkpoint: string;
  readonly resolution: number;
  readonly arch: { n_hid: number; n_groups: number; n_blk_per_group: number; vocab_size: number; input_channels: number; n_init: number };
  readonly encoder: { file: string; sha256: string; format: string; dtypes: readonly string[] };
  readonly decoder: { file: string; sha256: string; format: string; dtypes: readonly string[] };
}

export default class ConvertOpenAiDvaeCommand extends BaseCommand<typeof ConvertOpenAiDvaeCommand> {
  static override summary = "Convert OpenAI's released dVAE (encoder.pkl, decoder.pkl) into a dVAE run.";

  static override description =
    'Reads the two files as openai/DALL-E publishes them (whole PyTorch modules saved with torch.save, zip or legacy ' +
    'format, f32 or f16 weights) through a reader that executes nothing: only the classes and tensors such files ' +
    'hold are accepted, anything else (a pickle that would run code) is refused. Writes RUN/config.yaml (the files\' ' +
    'architecture at --resolution pixels), RUN/checkpoints/step-0 (weights under the released names, SHA256SUMS), ' +
    'RUN/latest and RUN/openai-dvae.json (the files\' SHA-256). encode, decode, evaluate recon, train-prior and ' +
    'export take the run as --dvae RUN. RUN must be new, empty, or an earlier conversion\'s.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --encoder encoder.pkl --decoder decoder.pkl --out runs/dvae-openai',
  ];

  static override flags = {
    encoder: Flags.string({ summary: 'The released encoder (encoder.pkl).', required: true, helpValue: 'FILE' }),
    decoder: Flags.string({ summary: 'The released decoder (decoder.pkl).', required: true, helpValue: 'FILE' }),
    out: Flags.string({ char: 'o', summary: 'The dVAE run to write: new, empty, or an earlier conversion.', required: true, helpValue: 'RUN' }),
    resolution: Flags.integer({ summary: 'Image side in pixels the run encodes and decodes (the released dVAE: 256).', default: 256, min: 1 }),
  };

  // The run's config is made from the released files and --resolution; no --config or --set applies.
  static override configUse: ConfigUse = NO_CONFIG;

  async run(): Promise<ConvertOpenAiDvaeResult> {
    // The engine is loaded here, not at the top, so `dalle --help` lists this command even without the native addon.
    const { CONVERT_OUTPUT_RULE, convertedConfig, readOpenAiDvaeFiles, writeOpenAiDvaeRun } = await import('../../core/models/dvae/convert-openai');
    const { claimOutputFolder } = await import('../../core/io/output-folder');
    const { out, resolution } = this.flags;
    // A --out that holds something else, or cannot be written, fails now, before the files are read.
    claimOutputFolder(out, CONVERT_OUTPUT_RULE);
    const sources = await readOpenAiDvaeFiles(this.flags.encoder, this.flags.decoder);
    const config = convertedConfig(sources.dvae, resolution);
    this.lockFolder(out);
    const run = writeOpenAiDvaeRun(out, sources, config);
    const { arch } = sources.dvae;
    const grid = resolution / 2 ** (arch.n_groups - 1);
    const describeSource = (s: typeof sources.encoder): string => `${s.file} (${s.format} format, ${s.dtypes.join('/')})`;
    this.log(`converted ${describeSource(sources.encoder)} and ${describeSource(sources.decoder)}`);
    this.log(`dVAE run ${out}: ${arch.vocab_size} codes, n_hid ${arch.n_hid}, ${arch.n_groups} groups of ${arch.n_blk_per_group} blocks; ${resolution} px images <-> ${grid}x${grid} token grids; weights in ${run.checkpoint}`);
    return { out, checkpoint: run.checkpoint, resolution, arch: { ...arch }, encoder: sources.encoder, decoder: sources.decoder };
  }
}
