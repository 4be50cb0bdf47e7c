// The functional op API. Importing this module registers every op (the harness relies on that).
export * from './view';
export * from './cast';
export * from './matmul';
export * from './softmax';
export * from './layernorm';
export * from './embedding';
export * from './loss';
export * from './attention';
export * from './sparse-attention';
export * from './elementwise';
export * from './reduce';
export * from './concat';
export * from './conv';
export * from './precision';
export * from './codebook';
