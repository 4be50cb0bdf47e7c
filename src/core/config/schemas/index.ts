/** Every config kind, by the name its YAML files give in their `kind:` line. Adding a kind is one line here. */
import { dvaeConfig } from './dvae';
import { priorConfig } from './prior';

export const configSchemas = {
  dvae: dvaeConfig,
  prior: priorConfig,
} as const;

export type ConfigKind = keyof typeof configSchemas;
export const CONFIG_KINDS = Object.keys(configSchemas) as ConfigKind[];

export { dvaeConfig, DvaeConfig } from './dvae';
export { priorConfig, PriorConfig } from './prior';
export { runtimeSection, RuntimeConfig, Device, Precision, DEVICE_NAMES, PRECISIONS, checkDeviceName } from './runtime';
