export * from './module';
export * from './layers';
export * from './weights-digest';
