#!/usr/bin/env bash
# Reproduces the bundled default model (models/default/{dvae,prior}, v2 of 2026-12-06) from scratch with our own
# commands, on the emoji data rendered from the npm emoji sets. About 35 + 160 minutes on 2 CPU cores. Usage:
#   bash scripts/make-default-model.sh [WORK_DIR]      (default /tmp/dalle-default)
# The README's figures for the bundled model came from this recipe; scripts/evaluate-default-model.sh measures them
# (with COND_SCALE=1: this prior samples best unguided, see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/dalle-default}
DALLE="node bin/run.js"
mkdir -p "$WORK"

# 1. Data: all four emoji styles at 64 px; train / val / zero-shot splits (deterministic, seed 0).
[ -f "$WORK/data/dataset.json" ] || $DALLE dataset emoji --out "$WORK/data" --resolution 64

# 2. dVAE: configs/dvae-emoji-fine.yaml (squared-error reconstruction, k-means codebook init, the usage term; 4,300
#    updates) with three groups, so the grid is 16x16 (the prior's 256 image positions) instead of 32x32.
if [ ! -d "$WORK/dvae/checkpoints/step-4300" ]; then
  if [ -f "$WORK/dvae/latest" ]; then
    $DALLE train-dvae --out "$WORK/dvae" --resume
  else
    $DALLE train-dvae --config configs/dvae-emoji-fine.yaml --data "$WORK/data/train" --out "$WORK/dvae" \
      --set model.n_groups=3
  fi
fi
$DALLE evaluate recon --dvae "$WORK/dvae" --data "$WORK/data/val"

# 3. Prior: configs/prior-emoji.yaml (7.4M parameters), 7,000 updates of 8 on a cosine from 8e-4, then resumed on a
#    20,000-update cosine (the step size restarts at about 6e-4 and decays to 2.5e-5). The tokenizer is trained on the
#    training captions and saved in the run. A run stopped by a signal resumes with the same command.
if [ ! -d "$WORK/prior/checkpoints/step-7000" ] && [ ! -d "$WORK/prior/checkpoints/step-20000" ]; then
  if [ -f "$WORK/prior/latest" ]; then
    $DALLE train-prior --out "$WORK/prior" --resume
  else
    $DALLE train-prior --config configs/prior-emoji.yaml --data "$WORK/data" --dvae "$WORK/dvae" --out "$WORK/prior" \
      --set train.steps=7000 --set train.lr=8e-4 --set train.lr_min=2.5e-5 --set train.warmup_steps=300 \
      --set train.checkpoint_every=500
  fi
fi
[ -d "$WORK/prior/checkpoints/step-20000" ] || $DALLE train-prior --out "$WORK/prior" --resume --set train.steps=20000

# 4. Pack: weights only (no optimizer state), matrices in f16, into the package.
node scripts/pack-model.js "$WORK/dvae" models/default/dvae --f16
node scripts/pack-model.js "$WORK/prior" models/default/prior --f16
du -sh models/default
