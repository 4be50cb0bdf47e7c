export * from './grad-scaler';
export * from './precision';
export * from './prior';
