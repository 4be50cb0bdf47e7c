#!/usr/bin/env bash
# PowerSGD against exact all-reduce on prior-emoji (issue figure): the same run three times as 2 data-parallel ranks on
# this machine (dalle launch, Gloo), exact / PowerSGD rank 1 / rank 4, the same seed, data and number of updates; prints
# the bytes each rank all-reduced per update and the validation loss at the end.
#   bash bench/powersgd-prior-emoji.sh DATA DVAE OUT [STEPS]
# VARIANTS (default "none powersgd-1 powersgd-4") picks the runs; the table lists every run found in OUT.
# DATA: `dalle dataset emoji` output; DVAE: a dVAE run of 16x16 grids of 1024 codes (models/default/dvae copied
# somewhere writable: its token cache is written beside it); OUT: a folder for the three runs.
set -euo pipefail
data=$1 dvae=$2 out=$3 steps=${4:-300}
cd "$(dirname "$0")/.."
mkdir -p "$out"
common=(--config configs/prior-emoji.yaml --data "$data" --dvae "$dvae" --tokenizer models/default/prior/tokenizer.json
  --set "train.steps=$steps" --set train.warmup_steps=30 --set "train.val_every=$steps" --set train.val_batches=25
  --set "train.checkpoint_every=$steps" --set "train.sample_every=$steps" --set train.log_every=10)
for variant in ${VARIANTS:-none powersgd-1 powersgd-4}; do
  case $variant in
    none) sets=(--set train.grad_compression=none) ;;
    powersgd-*) sets=(--set train.grad_compression=powersgd --set "train.powersgd_rank=${variant#powersgd-}") ;;
  esac
  rm -rf "${out:?}/$variant"
  start=$(date +%s)
  DALLE_THREADS=1 node bin/run.js launch --nproc 2 -- train-prior "${common[@]}" "${sets[@]}" --out "$out/$variant" > "$out/$variant.log" 2>&1
  echo "$variant: $(( $(date +%s) - start )) s"
done
node -e '
const fs = require("fs");
const out = process.argv[1];
const rows = [];
const found = fs.readdirSync(out).filter((d) => d === "none" || /^powersgd-\d+$/.test(d)).sort((a, b) => (a === "none" ? -1 : b === "none" ? 1 : Number(a.split("-")[1]) - Number(b.split("-")[1])));
for (const v of found) {
  const lines = fs.readFileSync(`${out}/${v}/metrics.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const train = lines.filter((l) => "allreduce_bytes" in l);
  const val = lines.filter((l) => "val_loss" in l).pop();
  const last = train[train.length - 1];
  rows.push({ variant: v, bytes: last.allreduce_bytes, uncompressed: last.allreduce_bytes_uncompressed, val: val.val_loss, valImage: val.val_image_loss, step: val.step, msPerUpdate: train.reduce((a, l) => a + l.ms_per_update, 0) / train.length });
}
const base = rows[0];
console.log("| gradients | bytes per update per rank | of exact | val loss | val image loss (nats/token) | vs exact | ms/update |");
console.log("|---|---|---|---|---|---|---|");
for (const r of rows) console.log(`| ${r.variant} | ${r.bytes.toLocaleString("en")} | ${(r.bytes / base.bytes * 100).toFixed(1)}% | ${r.val.toFixed(4)} | ${r.valImage.toFixed(4)} | ${(r.val - base.val >= 0 ? "+" : "") + (r.val - base.val).toFixed(4)} | ${r.msPerUpdate.toFixed(0)} |`);
console.log(`(after ${base.step} updates of batch 8 on 2 ranks)`);
' "$out"
