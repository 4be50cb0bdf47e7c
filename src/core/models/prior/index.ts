// The transformer prior: model (prior.ts), its attention masks (masks.ts) and masked attention (attention.ts).
export * from './masks';
export * from './attention';
export * from './prior';
