/**
 * `dalle convert openai-dvae`: OpenAI's released encoder.pkl + decoder.pkl -> a dVAE run directory that every command
 * taking `--dvae RUN` reads as it reads a trained one:
 *
 *   RUN/config.yaml                          the dvae config: the files' architecture (released: n_hid 256, 4 groups of
 *                                            2 blocks, 8192 codes), data.resolution (released: 256)
 *   RUN/checkpoints/step-0/model.safetensors the parameters under the released names (f32), SHA256SUMS, state.json
 *   RUN/latest                               checkpoints/step-0
 *   RUN/openai-dvae.json                     what was converted: each file's path, SHA-256, format and dtypes
 *
 * Both files are read and checked completely before anything is written; RUN must be new, empty, or an earlier
 * conversion's (which is replaced).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DvaeConfig, dvaeConfig, resolveConfig, writeRunConfig } from '../../config';
import { writeFileAtomicSync } from '../../io/atomic';
import { sha256File } from '../../io/checksums';
import { OutputFolderRule, claimOutputFolder } from '../../io/output-folder';
import { readTorchFile } from '../../io/torch-file';
import { Tensor } from '../../tensor';
import { listCheckpoints, writeCheckpoint } from '../../checkpoint';
import { downsampleFactor } from './layout';
import { OPENAI_DVAE_CLASSES, OpenAiDvae, OpenAiDvaeError, openAiDvae } from './openai-release';

export const OPENAI_DVAE_MARK = 'openai-dvae.json';

/** RUN is written only when new, empty, or marked by an earlier conversion. */
export const CONVERT_OUTPUT_RULE: OutputFolderRule = {
  command: 'dalle convert openai-dvae',
  marks: [OPENAI_DVAE_MARK],
  hint: 'choose a new --out (a new or empty folder): a converted dVAE is a run directory of its own',
};

export interface ConvertedSource {
  readonly file: string;
  readonly sha256: string;
  readonly format: 'zip' | 'legacy';
  readonly dtypes: readonly string[];
}

export interface OpenAiDvaeSources {
  readonly dvae: OpenAiDvae;
  readonly encoder: ConvertedSource;
  readonly decoder: ConvertedSource;
}

/** Reads and checks both files (nothing is written). */
export async function readOpenAiDvaeFiles(encoderFile: string, decoderFile: string): Promise<OpenAiDvaeSources> {
  const encoder = await readTorchFile(encoderFile, OPENAI_DVAE_CLASSES);
  const decoder = await readTorchFile(decoderFile, OPENAI_DVAE_CLASSES);
  const dvae = openAiDvae(encoder, decoder);
  const source = (file: string, format: 'zip' | 'legacy', dtypes: readonly string[]): ConvertedSource => ({ file: path.resolve(file), sha256: sha256File(file), format, dtypes });
  return { dvae, encoder: source(encoderFile, encoder.format, dvae.dtypes.encoder), decoder: source(decoderFile, decoder.format, dvae.dtypes.decoder) };
}

/** The run's config: the files' architecture at `resolution` pixels, everything else the defaults. */
export function convertedConfig(dvae: OpenAiDvae, resolution: number): DvaeConfig {
  const factor = downsampleFactor(dvae.arch);
  if (!Number.isInteger(resolution) || resolution < factor || resolution % factor !== 0) {
    throw new OpenAiDvaeError(
      `--resolution ${resolution} is not a multiple of ${factor}, the side of one token in pixels for this dVAE`,
      `give a multiple of ${factor} (the released dVAE was trained at 256)`,
    );
  }
  const sets = { ...dvae.arch, resolution };
  return resolveConfig(dvaeConfig, {
    sets: Object.entries(sets).map(([key, value]) => ({
      keyPath: key === 'resolution' ? 'data.resolution' : `model.${key}`,
      text: String(value),
      argument: key === 'resolution' ? `--resolution ${value}` : `${key} ${value} (from the files)`,
    })),
  });
}

export interface ConvertedRun {
  readonly out: string;
  readonly checkpoint: string;
  readonly config: DvaeConfig;
}

/**
 * Writes the run (see the module comment). `claimOutputFolder(out, CONVERT_OUTPUT_RULE)` must have passed; an
 * earlier conversion whose run was trained further is refused rather than rewound.
 */
export function writeOpenAiDvaeRun(out: string, sources: OpenAiDvaeSources, config: DvaeConfig): ConvertedRun {
  claimOutputFolder(out, CONVERT_OUTPUT_RULE);
  const later = listCheckpoints(out).filter((step) => step !== 0);
  if (later.length > 0) {
    throw new OpenAiDvaeError(`${out} was converted earlier and then trained (checkpoints step-${later.join(', step-')})`, 'choose a new --out: converting again would replace what was trained');
  }
  fs.mkdirSync(out, { recursive: true });
  writeRunConfig(out, dvaeConfig, config);
  const model = new Map<string, Tensor>();
  try {
    for (const [name, t] of sources.dvae.tensors) model.set(name, Tensor.from(t.data, [...t.shape], 'f32'));
    const checkpoint = writeCheckpoint(out, {
      model,
      optimizer: new Map(),
      state: { kind: 'dvae', step: 0, optimizer_step: 0, rng: {}, metrics: {} },
      keep: 0,
    });
    const mark = {
      format: 'dalle-openai-dvae',
      version: 1,
      encoder: sources.encoder,
      decoder: sources.decoder,
      created: new Date().toISOString(),
    };
    writeFileAtomicSync(path.join(out, OPENAI_DVAE_MARK), JSON.stringify(mark, null, 2) + '\n');
    return { out, checkpoint, config };
  } finally {
    for (const t of model.values()) t.dispose();
  }
}
