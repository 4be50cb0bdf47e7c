#!/usr/bin/env bash
# Reproduces the bundled default model (models/default/{dvae,prior}) from scratch with our own commands, on the emoji
# data rendered from the npm emoji sets. About 30 + 60 minutes on 2 CPU cores. Usage:
#   bash scripts/make-default-model.sh [WORK_DIR]      (default /tmp/dalle-default)
# The figures the README quotes came from this recipe (2026-11-25).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/dalle-default}
DALLE="node bin/run.js"
mkdir -p "$WORK"

# 1. Data: all four emoji styles at 64 px; train / val / zero-shot splits (deterministic, seed 0).
[ -f "$WORK/data/dataset.json" ] || $DALLE dataset emoji --out "$WORK/data" --resolution 64

# 2. dVAE: configs/dvae-emoji.yaml shortened to 4,000 updates (28 minutes here).
[ -f "$WORK/dvae/latest" ] || $DALLE train-dvae --config configs/dvae-emoji.yaml --data "$WORK/data/train" --out "$WORK/dvae" \
  --set train.steps=4000 --set train.lr_decay_steps=4000 --set train.tau_anneal_steps=2500 --set train.checkpoint_every=500
$DALLE evaluate recon --dvae "$WORK/dvae" --data "$WORK/data/val"

# 3. Prior: configs/prior-emoji.yaml shortened to 4,000 updates of 8 (about 60 minutes here); the tokenizer is
#    trained on the training captions and saved in the run.
[ -f "$WORK/prior/latest" ] || $DALLE train-prior --config configs/prior-emoji.yaml --data "$WORK/data" --dvae "$WORK/dvae" \
  --out "$WORK/prior" --set train.steps=4000 --set train.lr=8e-4 --set train.lr_min=2.5e-5 --set train.warmup_steps=300 \
  --set train.checkpoint_every=500

# 4. Pack: weights only (no optimizer state), matrices in f16, into the package.
node scripts/pack-model.js "$WORK/dvae" models/default/dvae --f16
node scripts/pack-model.js "$WORK/prior" models/default/prior --f16
du -sh models/default
