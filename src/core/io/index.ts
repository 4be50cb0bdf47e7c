/**
 * File formats and atomic writes: safetensors (checkpoints), .npy (token grids), and the plain arrays they hold; bounded
 * reads of users' text files.
 */
export * from './atomic';
export * from './checksums';
export * from './dtype';
export * from './errors';
export * from './finite';
export * from './npy';
export * from './safetensors';
export * from './tensors';
export * from './text-file';
