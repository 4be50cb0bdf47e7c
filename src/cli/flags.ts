/** Flags shared by every command that runs a job from a config: the config itself, and runtime overrides. */
import { Errors, Flags } from '@oclif/core';
import { DEVICE_NAMES, PRECISIONS, checkDeviceName } from '../core/config';

const CONFIG_GROUP = 'CONFIG';
const RUNTIME_GROUP = 'RUNTIME';

export const sharedFlags = {
  config: Flags.string({
    char: 'c',
    summary: 'YAML config file; it only overrides the defaults (see configs/).',
    helpValue: 'FILE',
    helpGroup: CONFIG_GROUP,
  }),
  set: Flags.string({
    summary: 'Override one config value, e.g. --set train.lr=3e-4; repeatable, applied after --config.',
    helpValue: 'KEY=VALUE',
    multiple: true,
    multipleNonGreedy: true,
    helpGroup: CONFIG_GROUP,
  }),
  seed: Flags.integer({
    summary: 'Random seed (sets runtime.seed).',
    helpGroup: RUNTIME_GROUP,
  }),
  device: Flags.string({
    summary: `Where to compute: ${DEVICE_NAMES} (the N-th GPU; cuda = cuda:0). Sets runtime.device.`,
    helpValue: 'cpu|cuda|cuda:N',
    helpGroup: RUNTIME_GROUP,
    // Checked here so a typo is a usage error (exit 2) before anything is read.
    parse: async (input) => {
      const problem = checkDeviceName(input);
      if (problem !== undefined) throw new Errors.CLIError(problem, { exit: 2 });
      return input;
    },
  }),
  threads: Flags.integer({
    summary: 'CPU threads, 0 = all cores (sets runtime.threads).',
    env: 'DALLE_THREADS',
    helpGroup: RUNTIME_GROUP,
  }),
  precision: Flags.option({
    options: PRECISIONS,
    summary: 'Compute precision (sets runtime.precision).',
    helpGroup: RUNTIME_GROUP,
  })(),
};

/** The runtime flags and the config key each one sets; they apply after --set, so a flag wins. */
export const RUNTIME_FLAG_KEYS = {
  seed: 'runtime.seed',
  device: 'runtime.device',
  threads: 'runtime.threads',
  precision: 'runtime.precision',
} as const;
