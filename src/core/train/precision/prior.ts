// The prior's resblocks for a Precision (precision.ts): layer i's attention sublayer (ln_1, attn) is resblock 2i, its
// MLP sublayer (ln_2, mlp) resblock 2i + 1 (Ramesh et al. 2021, B.2: "resblock" = one residual branch).
import type { Module } from '../../nn/module';
import type { Prior } from '../../models/prior';

export function priorResblocks(prior: Prior): Module[][] {
  return prior.blocks.flatMap((b) => [[b.ln1, b.attn], [b.ln2, b.mlp]] as Module[][]);
}
