// What each command that computes needs of a device: the ops its models run there (those that call kernels; views,
// casts and concatenation need none). applyRuntime (runtime.ts) refuses a GPU at the start, listing the ops it lacks
// kernels for (fused ops excepted: callers run the ops they fuse where the device lacks them), so a job never dies
// half-way on a missing kernel. test/backend/device-jobs.test.ts runs the jobs on a
// stand-in device and checks that every op they ran is listed here.

/** The commands that compute with the engine (and so take --device). */
export const COMPUTE_JOBS = ['train-dvae', 'train-prior', 'train-clip', 'encode', 'decode', 'generate', 'rerank', 'evaluate'] as const;
export type ComputeJob = (typeof COMPUTE_JOBS)[number];

/** Elementwise ops (one kernel family) and reductions: every model uses some of them. */
const ELEMENTWISE = ['add', 'sub', 'mul', 'div', 'exp', 'log', 'sigmoid', 'tanh', 'relu', 'gelu', 'neg', 'sqrt', 'square', 'affine'];
const REDUCTIONS = ['sum', 'mean', 'max'];

/** The dVAE (models/dvae): convolutions, pooling and upsampling, the gumbel-softmax and its KL, codes in (embedding);
 *  reluConv2d, codebookStats and relaxedCodes where the device has them (fused ops: relu then conv2d, the logSoftmax /
 *  exp / mul / sum chain, and the gumbel noise / add / softmax chain elsewhere; see OpDef.fusionOf). */
const DVAE_OPS = [...ELEMENTWISE, ...REDUCTIONS, 'conv2d', 'reluConv2d', 'codebookStats', 'relaxedCodes', 'maxPool2x2', 'upsample2x', 'softmax', 'logSoftmax', 'embedding', 'matmul'];
/** The transformer prior (models/prior), mixed precision's gradient scaling included. */
const PRIOR_OPS = [...ELEMENTWISE, ...REDUCTIONS, 'matmul', 'layerNorm', 'embedding', 'crossEntropy', 'attention', 'sparseAttention', 'softmax', 'logSoftmax', 'gradScaleLeave'];
/** CLIP (models/clip): a text transformer and a convolutional image tower. */
const CLIP_OPS = [...ELEMENTWISE, ...REDUCTIONS, 'matmul', 'layerNorm', 'embedding', 'crossEntropy', 'attention', 'softmax', 'logSoftmax', 'conv2d', 'maxPool2x2'];

const union = (...lists: string[][]): readonly string[] => Object.freeze([...new Set(lists.flat())]);

export const JOB_OPS: Readonly<Record<ComputeJob, readonly string[]>> = {
  'train-dvae': union(DVAE_OPS),
  // The dVAE encodes the images once (the token cache), then the prior trains.
  'train-prior': union(PRIOR_OPS, DVAE_OPS),
  'train-clip': union(CLIP_OPS),
  encode: union(DVAE_OPS),
  decode: union(DVAE_OPS),
  // The prior samples, the dVAE decodes (and encodes an image prompt), a CLIP reranks with --clip.
  generate: union(PRIOR_OPS, DVAE_OPS, CLIP_OPS),
  rerank: union(CLIP_OPS),
  // evaluate recon (dVAE), nll (prior and dVAE), clip-score, fid/kid/is and overlap (CLIP features).
  evaluate: union(PRIOR_OPS, DVAE_OPS, CLIP_OPS),
};
