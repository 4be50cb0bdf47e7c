/** File formats and atomic writes: safetensors (checkpoints), .npy (token grids), and the plain arrays they hold. */
export * from './atomic';
export * from './dtype';
export * from './errors';
export * from './npy';
export * from './safetensors';
export * from './tensors';
