/**
 * File formats and atomic writes: safetensors (checkpoints), .npy (token grids), and the plain arrays they hold; bounded
 * reads of users' text files; output paths checked before the work, output folders written only when empty or ours,
 * and named errors for writes that fail.
 */
export * from './atomic';
export * from './checksums';
export * from './dtype';
export * from './errors';
export * from './finite';
export * from './npy';
export * from './output-folder';
export * from './preflight';
export * from './safetensors';
export * from './tensors';
export * from './text-file';
export * from './write-errors';
