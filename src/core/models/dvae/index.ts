// The dVAE: model, architecture layout (parameter names and shapes) and training objective.
export * from './layout';
export * from './resblock';
export * from './encoder';
export * from './decoder';
export * from './loss';
export * from './dvae';
export * from './schedules';
export * from './codebook-init';
