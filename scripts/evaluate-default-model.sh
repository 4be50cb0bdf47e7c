#!/usr/bin/env bash
# The figures the README quotes for a bundled-style model (a prior run and its dVAE run), on the emoji data set:
# validation NLL per token, the text-to-image report (CLIP R-precision, CLIP score, FID blur curve against the real
# validation images and 199 training images as the real-image reference) on the 199 captions of
# docs/blur-fid-captions.txt, and the two sample sheets (validation and zero-shot captions), all with
# --cond-scale 3 --seed 0 (COND_SCALE=S in the environment for another guidance scale). About 10 minutes on 2 CPU
# cores. Usage:
#   [COND_SCALE=3] bash scripts/evaluate-default-model.sh PRIOR DVAE DATA CLIP OUT
# DATA: `dalle dataset emoji` output; CLIP: a `dalle train-clip` run trained on DATA/train only, e.g.
#   dalle train-clip --data DATA/train --out runs/clip-emoji-train --steps 3000
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 5 ] || { echo "usage: bash scripts/evaluate-default-model.sh PRIOR DVAE DATA CLIP OUT" >&2; exit 2; }
PRIOR=$1 DVAE=$2 DATA=$3 CLIP=$4 OUT=$5
DALLE="node bin/run.js"
MODEL="--prior $PRIOR --dvae $DVAE"
COND_SCALE=${COND_SCALE:-3}
mkdir -p "$OUT"

# 1. NLL of the validation pairs under the prior (all of DATA/val).
$DALLE evaluate nll $MODEL --data "$DATA/val" --json > "$OUT/nll.json"

# 2. The real-image reference: 199 training images (every 72nd), as the README's blur curve uses.
if [ ! -d "$OUT/train199" ]; then
  mkdir -p "$OUT/train199.tmp"
  ls "$DATA"/train/*.png | awk 'NR%72==1' | head -199 | xargs -I{} cp {} "$OUT/train199.tmp/"
  mv "$OUT/train199.tmp" "$OUT/train199"
fi

# 3. CLIP R-precision, CLIP score and the FID blur curve on 199 validation captions (samples in OUT/t2i-samples/).
$DALLE evaluate text-to-image $MODEL --captions docs/blur-fid-captions.txt --cond-scale "$COND_SCALE" --seed 0 \
  --clip "$CLIP" --real "$DATA/val" --reference "$OUT/train199" --out "$OUT/t2i" --json > "$OUT/t2i.stdout.json"

# 4. The sample sheets: 16 validation and 24 zero-shot captions, 4 samples each.
for SET in val16 zeroshot24; do
  $DALLE generate $MODEL --captions "docs/samples-$SET.txt" --out "$OUT/$SET" --samples 4 --cond-scale "$COND_SCALE" --seed 0 --json > /dev/null
  node scripts/sample-sheet.js "$OUT/$SET" "$OUT/samples-$SET.png" --columns 8
done
echo "figures in $OUT: nll.json, t2i.json (and .html), samples-val16.png, samples-zeroshot24.png"
