/**
 * Data-parallel training keys shared by the trainers' `train` sections. The world size is not configured: it comes
 * from the launcher (dalle launch, Slurm, torchrun-style variables, a Kubernetes Indexed Job), so a run can resume with
 * another one. train.batch_size is the global batch: each of the N ranks trains on batch_size / N examples of it.
 */
import { int, num, oneOf } from '../fields';
import { Section } from '../schema';

export const GRAD_COMPRESSIONS = ['none', 'powersgd'] as const;

export const distributedTrainFields = {
  grad_compression: oneOf(GRAD_COMPRESSIONS, 'none', 'gradient compression across data-parallel ranks: none (exact all-reduce) or powersgd (rank-r factors with error feedback, as the paper; see distributed/powersgd.ts)'),
  powersgd_rank: int(4, 'rank r of the PowerSGD factors (train.grad_compression: powersgd); more = closer to the exact gradient, more bytes', { min: 1 }),
  bucket_mb: num(25, 'gradients are all-reduced in buckets of about this many MB, each started as soon as backward has filled it', { greaterThan: 0 }),
} satisfies Section;
