import { Flags } from '@oclif/core';
import { BaseCommand } from '../cli/base-command';
import { AnyConfig, CONFIG_KINDS, formatConfigYaml, PriorConfig, resolveAnyConfig } from '../core/config';
import { priorParameterCount, priorTrainingMemory } from '../core/models/prior/size';

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

  async run(): Promise<AnyConfig> {
    const { schema, config, sources } = resolveAnyConfig({
      file: this.flags.config,
      kind: this.flags.kind,
      sets: this.configOverrides(),
    });
    this.log(formatConfigYaml(schema, config, { sources }).trimEnd());
    if (config.kind === 'prior') this.log(priorSizeComment(config as PriorConfig));
    return config;
  }
}

const GIB = 1024 ** 3;

/** YAML comment lines (the output stays valid YAML): the prior's parameter count and training memory estimate. */
function priorSizeComment(config: PriorConfig): string {
  const params = priorParameterCount(config.model);
  const mem = priorTrainingMemory(config.model, config.train.batch_size);
  const gib = (b: number) => `${(b / GIB).toFixed(b < 10 * GIB ? 2 : 0)} GiB`;
  return [
    `# parameters: ${params.toLocaleString('en-US')}`,
    `# training memory (fp32, batch ${config.train.batch_size}, estimate): ${gib(mem.totalBytes)} = ` +
      `${gib(mem.stateBytes)} weights, gradients and AdamW moments + ${gib(mem.activationBytes)} activations`,
  ].join('\n');
}
