// Schedules: learning rate (warmup, cosine, linear) and the dVAE's ramps (KL weight, gumbel temperature), as pure
// functions of the step so that a resumed run computes exactly the values an uninterrupted one would.

export type Schedule = (step: number) => number;

export const constant = (value: number): Schedule => () => value;

/** Linear from `from` at step 0 to `to` at step `steps`, then held at `to`. */
export function linear(from: number, to: number, steps: number): Schedule {
  return (step) => (steps <= 0 || step >= steps ? to : from + (to - from) * (step / steps));
}

/** Half-cosine from `from` at step 0 to `to` at step `steps`, then held at `to`. */
export function cosine(from: number, to: number, steps: number): Schedule {
  return (step) => {
    if (steps <= 0 || step >= steps) return to;
    return to + 0.5 * (from - to) * (1 + Math.cos(Math.PI * (step / steps)));
  };
}

/** Linear warmup from 0 to the value of `after` at step `warmup`, then `after` shifted by the warmup. */
export function warmup(warmupSteps: number, after: Schedule): Schedule {
  return (step) => (step < warmupSteps ? after(0) * ((step + 1) / warmupSteps) : after(step - warmupSteps));
}

/** The usual transformer schedule: linear warmup to `peak`, then cosine decay to `min` by step `total`. */
export function warmupCosine(peak: number, min: number, warmupSteps: number, total: number): Schedule {
  return warmup(warmupSteps, cosine(peak, min, Math.max(0, total - warmupSteps)));
}
