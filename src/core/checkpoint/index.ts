// Checkpoints of a run directory: the format (format.ts), writing (write.ts), finding and reading (read.ts).
export * from './format';
export * from './read';
export * from './write';
