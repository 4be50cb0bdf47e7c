export * from './device';
export * from './backend';
export * from './registry';
export { createCudaBackend } from './cuda';
