// The dVAE's per-update values as pure functions of the step (Ramesh et al. 2021, Appendix A.2), from the config's
// `train` section, so a resumed run computes exactly what an uninterrupted one would:
//   lr:   cosine from train.lr to train.lr_min over lr_decay_steps (paper 1e-4 -> 1.25e-6 over 1.2M), then held;
//   beta: linear from 0 to kl_weight over kl_ramp_steps (paper 6.6 over 5k), then held;
//   tau:  cosine from tau_start to tau_end over tau_anneal_steps (paper 1 -> 1/16 over 150k), then held.
import { Schedule, cosine, linear } from '../../train/schedule';

export interface DvaeTrainSchedule {
  readonly lr: number;
  readonly lr_min: number;
  readonly lr_decay_steps: number;
  readonly kl_weight: number;
  readonly kl_ramp_steps: number;
  readonly tau_start: number;
  readonly tau_end: number;
  readonly tau_anneal_steps: number;
}

export interface DvaeSchedules {
  readonly lr: Schedule;
  readonly beta: Schedule;
  readonly tau: Schedule;
}

/** Schedules from the dVAE config's `train` section (or the whole config). */
export function dvaeSchedules(config: DvaeTrainSchedule | { train: DvaeTrainSchedule }): DvaeSchedules {
  const t = 'train' in config ? config.train : config;
  return {
    lr: cosine(t.lr, t.lr_min, t.lr_decay_steps),
    beta: linear(0, t.kl_weight, t.kl_ramp_steps),
    tau: cosine(t.tau_start, t.tau_end, t.tau_anneal_steps),
  };
}
