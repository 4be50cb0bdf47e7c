export * from './dtype';
export * from './tensor';
export * from './scope';
export * from './autograd';
export * from './op';
export * from './reference';
export * from './blas1';
export { Storage, liveStorage, storagesLeakedToGc } from './storage';
