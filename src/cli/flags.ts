/** Flags shared by every command that runs a job from a config: the config itself, and runtime overrides. */
import { Flags } from '@oclif/core';
import { DEVICES, PRECISIONS } from '../core/config';

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
  device: Flags.option({
    options: DEVICES,
    summary: 'Where to compute (sets runtime.device).',
    helpGroup: RUNTIME_GROUP,
  })(),
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
