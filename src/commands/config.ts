import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { ConfigUse, EVERY_KEY } from '../cli/config-use';
import { AnyConfig, CONFIG_KINDS, formatConfigYaml, PriorConfig, resolveAnyConfig } from '../core/config';
import { PriorPrecision, priorGenerationMemory, priorParameterCount, priorTrainingMemory } from '../core/models/prior/size';
import {
  PriorDeviceGenerationEstimate, PriorDeviceTrainingEstimate, priorDeviceGenerationMemory, priorDeviceTrainingMemory,
} from '../core/models/prior/size-cuda';

export default class ConfigCommand extends BaseCommand<typeof ConfigCommand> {
  static override summary = 'Print the fully resolved config; run it before a long job.';

  static override description = [
    "Resolves a config exactly as a job would: the defaults in code (the paper's numbers), then the YAML file given " +
      'with --config (its "kind:" line says which config it is), then each --set, then the runtime flags (--seed, ' +
      '--device, --threads, --precision). Prints every key with its doc, and where each non-default value came from.',
    'Any unknown key, wrong type, out-of-range value or malformed YAML is reported with its file, line and key, and ' +
      'the command exits with code 3. With --json the resolved config is printed as one JSON object.',
  ].join('\n\n');

  static override examples = [
    {
      description: 'Check a config before training.',
      command: '<%= config.bin %> <%= command.id %> --config configs/dvae-emoji.yaml',
    },
    {
      description: 'See what an override and a flag change.',
      command: '<%= config.bin %> <%= command.id %> --config configs/prior-emoji.yaml --set train.lr=3e-4 --seed 7',
    },
    {
      description: "Print the defaults of a kind (the paper's numbers).",
      command: '<%= config.bin %> <%= command.id %> --kind prior',
    },
    {
      description: 'Machine-readable: the resolved config as JSON.',
      command: '<%= config.bin %> <%= command.id %> --config configs/dvae-paper.yaml --json',
    },
  ];

  static override flags = {
    kind: Flags.option({
      options: CONFIG_KINDS,
      summary: 'Which config to resolve when there is no --config file (or to require of the file).',
      helpGroup: 'CONFIG',
    })(),
  };

  static override configUse: ConfigUse = EVERY_KEY;

  async run(): Promise<AnyConfig | (AnyConfig & { estimates: PriorEstimates })> {
    const { schema, config, sources } = resolveAnyConfig({
      file: this.flags.config,
      kind: this.flags.kind,
      sets: this.configOverrides(),
    });
    this.log(formatConfigYaml(schema, config, { sources }).trimEnd());
    if (config.kind !== 'prior') return config;
    const estimates = priorEstimates(config as PriorConfig);
    this.log(priorSizeComment(config as PriorConfig, estimates));
    if (estimates.device) this.log(priorDeviceSizeComment(estimates.device));
    return { ...config, estimates }; // --json: the resolved config plus the estimates as fields

  }
}

const GIB = 1024 ** 3;

/** `dalle generate`'s default --batch, for the generation estimate. */
const GENERATE_BATCH = 8;
const PRECISIONS: readonly PriorPrecision[] = ['fp32', 'fp16', 'bf16'];

/** What --json carries besides the config: the numbers the comment lines print, in bytes. */
export interface PriorEstimates {
  parameters: number;
  /** Peak allocator bytes of one training step at train.batch_size, per precision (train.recompute as configured). */
  training: Record<PriorPrecision, { batch: number; recompute: boolean; stateBytes: number; activationBytes: number; totalBytes: number }>;
  /** Peak allocator bytes of the prior in `dalle generate --batch 8`, fp32: cond-scale 1, and any other cond-scale. */
  generation: Array<{ batch: number; condScale: '1' | 'other'; rows: number; weightBytes: number; cacheBytes: number; transientBytes: number; totalBytes: number }>;
  /** With runtime.device cuda / cuda:N: the same, per GPU, as the CUDA allocator counts it (its peakBytesInUse). */
  device?: PriorDeviceEstimates;
}

export interface PriorDeviceEstimates {
  device: string;
  training: Record<PriorPrecision, { batch: number; recompute: boolean } & PriorDeviceTrainingEstimate>;
  generation: Array<{ batch: number; condScale: '1' | 'other' } & PriorDeviceGenerationEstimate>;
}

function priorEstimates(config: PriorConfig): PriorEstimates {
  const batch = config.train.batch_size;
  const recompute = config.train.recompute;
  const training = {} as PriorEstimates['training'];
  for (const precision of PRECISIONS) {
    training[precision] = { batch, recompute, ...priorTrainingMemory(config.model, batch, { precision, recompute }) };
  }
  const generation = (['1', 'other'] as const).map((condScale) => ({
    batch: GENERATE_BATCH,
    condScale,
    ...priorGenerationMemory(config.model, GENERATE_BATCH, { condScale: condScale === '1' ? 1 : 2 }),
  }));
  const device = config.runtime.device === 'cpu' ? undefined : priorDeviceEstimates(config);
  return { parameters: priorParameterCount(config.model), training, generation, ...(device ? { device } : {}) };
}

function priorDeviceEstimates(config: PriorConfig): PriorDeviceEstimates {
  const batch = config.train.batch_size;
  const recompute = config.train.recompute;
  const training = {} as PriorDeviceEstimates['training'];
  for (const precision of PRECISIONS) {
    training[precision] = { batch, recompute, ...priorDeviceTrainingMemory(config.model, batch, { precision, recompute }) };
  }
  const generation = (['1', 'other'] as const).map((condScale) => ({
    batch: GENERATE_BATCH,
    condScale,
    ...priorDeviceGenerationMemory(config.model, GENERATE_BATCH, { condScale: condScale === '1' ? 1 : 2 }),
  }));
  return { device: config.runtime.device, training, generation };
}

const gib = (b: number) => `${(b / GIB).toFixed(b < 10 * GIB ? 2 : 0)} GiB`;
const mib = (b: number) => `${Math.round(b / 2 ** 20)} MiB`;

/**
 * YAML comment lines (the output stays valid YAML): the prior's parameter count and the peak memory (as the engine's
 * allocator counts it, size classes included) of training and of generation. Estimates, within about 20% of the
 * measured peak (test/models/prior-size.test.ts).
 */
function priorSizeComment(config: PriorConfig, e: PriorEstimates): string {
  const t = e.training;
  const [g1, g2] = e.generation;
  return [
    `# parameters: ${e.parameters.toLocaleString('en-US')}`,
    `# training memory (peak of one step, batch ${config.train.batch_size}${config.train.recompute ? ', recompute' : ''}, estimate): ` +
      PRECISIONS.map((p) => `${p} ${gib(t[p].totalBytes)}`).join(', '),
    `#   fp32 = ${gib(t.fp32.stateBytes)} weights, gradients and AdamW moments + ${gib(t.fp32.activationBytes)} activations and backward buffers`,
    `#   fp16/bf16 are emulated on this CPU engine: fp32 tensors with values rounded to 16 bits, plus rounded copies of ` +
      'the resblocks\' weights, inputs and outputs, so they take more memory than fp32 here, not less',
    `# generation memory (prior, fp32, dalle generate --batch ${GENERATE_BATCH}, estimate): ${gib(g1.totalBytes)} ` +
      `(${gib(g1.weightBytes)} weights + ${gib(g1.cacheBytes)} KV cache + ${gib(g1.transientBytes)} prefill/step buffers); ` +
      `${gib(g2.totalBytes)} with --cond-scale other than 1 (${g2.rows} rows)`,
  ].join('\n');
}

/** The GPU's lines: what the CUDA allocator's peakBytesInUse should read, per GPU, and what it does not count. */
function priorDeviceSizeComment(d: PriorDeviceEstimates): string {
  const t = d.training;
  const [g1, g2] = d.generation;
  return [
    `# GPU memory per GPU (${d.device}, estimate: the tensors above in the CUDA allocator's size classes plus the ` +
      'CUDA backend\'s attention workspaces; what its peakBytesInUse counts):',
    `#   training (batch ${t.fp32.batch}${t.fp32.recompute ? ', recompute' : ''}): ` +
      PRECISIONS.map((p) => `${p} ${gib(t[p].totalBytes)}`).join(', ') +
      ` (fp32 = ${gib(t.fp32.stateBytes)} weights, gradients and AdamW moments + ${gib(t.fp32.activationBytes)} ` +
      `activations + ${gib(t.fp32.workspaceBytes)} attention workspaces; fp16/bf16 are emulated in f32 on the GPU too)`,
    `#   generation (prior, fp32, dalle generate --batch ${g1.batch}): ${gib(g1.totalBytes)}; ${gib(g2.totalBytes)} ` +
      `with --cond-scale other than 1 (${g2.rows} rows)`,
    `#   not counted: about ${mib(t.fp32.outsideAllocatorBytes)} outside the allocator (the cuBLASLt workspace and the ` +
      'addon\'s scratch) and the CUDA context (driver-dependent, often some hundreds of MiB)',
  ].join('\n');
}
