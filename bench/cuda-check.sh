#!/usr/bin/env bash
# What a GPU session does (one device call, about 8 minutes):
#   1. here, before it (no GPU needed): bash bench/cuda-carry.sh --refs   (the CPU reference runs, once: about 15 min
#      on 2 cores; then packs .device/ and prints the carried size, which must stay under 64 MiB)
#   2. the device tool's run, with carry [".device"] and timeout_s 560, command:
#        bash bench/cuda-check.sh
#      (DALLE_CHECK_ONLY="prior prior-fp16 summary" bash bench/cuda-check.sh reruns some steps only)
#   3. read $OUT/summary.json (every figure; what is missing is named) and the step logs beside it.
# The one prepared script of a GPU session (an H100 / H200 with nothing else on it): every step has a time limit, keeps
# its output in its own log, and runs whether or not the steps before it passed; the whole run stays under 8 minutes
# (each step's limit is cut to what is left of DALLE_CHECK_BUDGET, 450 s by default). The last step writes
# summary.json: every step's exit status and seconds, the GPU, the test counts and the attention figures.
#   bash bench/cuda-check.sh [--dry-run]      figures go to $OUT when set, else to a new folder it prints
# On a machine without node or npm (the device machine: nvcc, PyTorch, no node), carry .device/ from
# bench/cuda-carry.sh: the node binary and dist/, build/Release and a pruned node_modules are unpacked from it when the
# copy lacks them. Steps:
#   gpu        nvidia-smi (what else runs on the GPU: timings are meaningless when something does)
#   build      nvcc build of the CUDA addon, only when the carried one is missing
#   status     the CUDA addon's view (cudaStatus)
#   nccl       the NCCL collective backend (test/cuda/nccl-gpu.test.ts, test/distributed/nccl.test.ts) with the Python
#              environment's libnccl.so.2 (PyTorch's nvidia-nccl-cu* wheel or torch/lib) as DALLE_NCCL_LIB: one rank on
#              the GPU (two ranks where there are two GPUs)
#   prior-nccl the prior trained as one data-parallel rank through NCCL (dalle launch --nproc 1), against the CPU run
#   ops        the op harness on cuda:0 (test/ops.test.ts: every op case, CPU reference)
#   cuda-tests test/cuda build, wiring and GPU comparisons (tensor-core attention and decode included), the prior's
#              full-size attention (DALLE_CUDA_CHECK_BIG=1)
#   dvae       `dalle train-dvae --device cuda`, 200 updates on the carried emoji subset, against the carried CPU run of
#              the same command, seed and data (bench/cuda-compare.py metrics: largest relative loss difference)
#   prior      `dalle train-prior --device cuda` over the bundled dVAE, 200 updates, against the carried CPU run; also the
#              GPU's token grids of the data against the CPU's (the data the two priors trained on)
#   prior-fp16 the same run with --precision fp16: per-resblock grad_scales, and peak device memory against fp32
#              (both prior steps also save `dalle config --device cuda --json` of their run: the estimate against the
#              measured peak, fp32 and fp16, in summary.json memoryEstimate)
#   generate   `dalle generate --device cuda` (bundled models, 4 captions x 2 seeds) against the carried CPU output:
#              the share of identical tokens
#   step-emoji bench/cuda-prior-step.ts: a prior training step at prior-emoji shapes, ours vs PyTorch eager and compiled
#   step-large the same at 24 layers, d 1024, 256 text + 32x32 image tokens, batch 4
#   gen-speed  bench/generate.ts --device cuda: KV-cached generation image tokens/s, ours vs PyTorch on the GPU
#   e2e        `dalle info --json`, then a tiny `train-dvae --device cuda` (its refusal text, if it refuses, is the figure)
#   attention  bench/cuda-attention.ts: sparse attention fwd + bwd vs SDPA flash (dense causal) and FlexAttention
#   summary    summary.json
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
BUDGET=${DALLE_CHECK_BUDGET:-470}
ONLY=${DALLE_CHECK_ONLY:-}
START=$(date +%s)
OUTDIR=${OUT:-}
if [ "$DRY" = 0 ]; then
  [ -n "$OUTDIR" ] || OUTDIR=$(mktemp -d "${TMPDIR:-/tmp}/dalle-cuda-check.XXXXXX")
  mkdir -p "$OUTDIR"
  : > "$OUTDIR/steps.tsv"
  export OUTDIR OUT_STATUS="$OUTDIR/cuda-status.json"
  echo "cuda-check: figures in $OUTDIR"
fi

# step NAME LIMIT_S COMMAND: runs COMMAND (bash) under timeout, output to NAME.log, status and seconds to steps.tsv.
step() {
  local name=$1 limit=$2 cmd=$3
  if [ "$DRY" = 1 ]; then
    printf '%-10s <= %3ss  %s\n' "$name" "$limit" "$cmd"
    return 0
  fi
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
    printf '%s\tnot selected\t0\n' "$name" >> "$OUTDIR/steps.tsv"
    return 0
  fi
  local left=$((BUDGET - ($(date +%s) - START) - 10))
  [ "$name" = summary ] && left=$((left + 10))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    printf '%s\tskipped\t0\n' "$name" >> "$OUTDIR/steps.tsv"
    echo "cuda-check: $name skipped (no time left)"
    return 0
  fi
  local t0 rc
  t0=$(date +%s.%N)
  timeout --kill-after=5 "$limit" bash -c "$cmd" > "$OUTDIR/$name.log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >> "$OUTDIR/steps.tsv"
  echo "cuda-check: $name exit $rc in ${secs}s (limit ${limit}s)$([ "$rc" = 124 ] && echo ': timed out')"
}

# node and the runtime tree: from PATH and the copy, or unpacked from .device/ (bench/cuda-carry.sh).
unpack() {
  if ! command -v node > /dev/null; then
    mkdir -p .device/bin
    if [ ! -x .device/bin/node ]; then
      { xz -dc .device/node.xz 2> /dev/null || python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' .device/node.xz; } > .device/bin/node.tmp &&
        chmod +x .device/bin/node.tmp && mv .device/bin/node.tmp .device/bin/node
    fi
    export PATH="$PWD/.device/bin:$PATH"
  fi
  if [ -f .device/runtime.tar.xz ] && { [ ! -d node_modules ] || [ ! -d dist ] || [ ! -f build/Release/dalle_native.node ]; }; then
    tar -xJf .device/runtime.tar.xz 2> /dev/null ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(".")' .device/runtime.tar.xz
  fi
  node --version
}
MOCHA='node node_modules/mocha/bin/mocha.js'
if [ "$DRY" = 1 ]; then
  echo "cuda-check --dry-run: the steps, their time limits (cut to a ${BUDGET}s budget) and commands"
  printf '%-10s <= %3ss  %s\n' setup 60 'node from PATH or .device/node.xz; dist, build, node_modules from .device/runtime.tar.xz if missing'
else
  export -f unpack
  timeout 60 bash -c 'unpack' > "$OUTDIR/setup.log" 2>&1
  printf 'setup\t%s\t-\n' "$?" >> "$OUTDIR/steps.tsv"
  command -v node > /dev/null || export PATH="$PWD/.device/bin:$PATH"
fi

step gpu 15 'nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu --format=csv,noheader > "$OUTDIR/gpu.csv"; nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader > "$OUTDIR/gpu-apps.csv"'
step build 240 'if [ -f build/Release/dalle_cuda.node ]; then echo "carried build: $(cat build/Release/dalle_cuda.json)"; else inc=; [ -d .device/include/node ] && inc="--node-include .device/include/node"; DALLE_CUDA=1 DALLE_CUDA_JOBS=16 DALLE_CUDA_CACHE=/tmp/dalle-cuda-cache node native/cuda/build.js $inc; fi'
step status 20 'node -e "const s = require(\"./dist/src/core/cuda\").cudaStatus(); require(\"fs\").writeFileSync(process.env.OUT_STATUS, JSON.stringify(s, null, 2)); console.log(JSON.stringify(s)); process.exit(s.available ? 0 : 1)"'
# The GPU side of the CPU reference runs that bench/cuda-carry.sh --refs made here (.device/ref: the same commands with
# --device cpu, listed in .device/ref/commands.txt). Runs go to $RUNS (their checkpoints are too large to come back);
# metrics, final JSON lines and comparisons to $OUTDIR.
export RUNS=${TMPDIR:-/tmp}/dalle-cuda-runs
[ "$DRY" = 1 ] || { rm -rf "$RUNS"; mkdir -p "$RUNS"; }
REF=.device/ref
# shellcheck source=bench/cuda-runs.sh
source bench/cuda-runs.sh
# gpu_run NAME COMMAND-ARGS: dalle ARGS --device cuda --json; its final JSON line to NAME.json, metrics.jsonl and config.yaml to NAME/.
gpu_run() {
  local name=$1
  shift
  node bin/run.js "$@" --out "$RUNS/$name" --device cuda --json > "$OUTDIR/$name.events.jsonl"
  local rc=$?
  tail -n 1 "$OUTDIR/$name.events.jsonl" > "$OUTDIR/$name.json"
  mkdir -p "$OUTDIR/$name"
  cp "$RUNS/$name/metrics.jsonl" "$RUNS/$name/config.yaml" "$RUNS/$name/results.jsonl" "$OUTDIR/$name/" 2> /dev/null
  return $rc
}
# gpu_estimate NAME: `dalle config --device cuda --json` on the run's own config.yaml (the same model, batch, recompute
# and precision), to NAME.estimate.json: cuda-summary.py sets its estimate against the run's measured peakBytesInUse.
gpu_estimate() {
  node bin/run.js config --config "$RUNS/$1/config.yaml" --device cuda --json | tail -n 1 > "$OUTDIR/$1.estimate.json"
}
# nccl_lib: the libnccl.so.2 of the Python environment, or nothing (the device machine has NCCL only there).
nccl_lib() {
  python3 - << 'PY' 2> /dev/null
import glob, os, site, sys
dirs = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
for d in dirs:
    for pattern in ("nvidia/nccl/lib/libnccl.so.2", "torch/lib/libnccl.so.2", "nvidia/nccl/lib/libnccl.so*", "torch/lib/libnccl.so*"):
        hits = sorted(glob.glob(os.path.join(d, pattern)))
        if hits:
            print(hits[0])
            sys.exit(0)
PY
}
[ "$DRY" = 1 ] || export -f gpu_run gpu_estimate nccl_lib
export DVAE_ARGS PRIOR_ARGS GENERATE_ARGS REF
step nccl 60 "export DALLE_NCCL_LIB=\${DALLE_NCCL_LIB:-\$(nccl_lib)}; echo \"DALLE_NCCL_LIB=\$DALLE_NCCL_LIB\"; $MOCHA dist/test/cuda/nccl-gpu.test.js dist/test/distributed/nccl.test.js --reporter json --reporter-option output=\"\$OUTDIR/nccl-tests.json\""
step dvae 75 'gpu_run dvae-gpu train-dvae $DVAE_ARGS; python3 bench/cuda-compare.py metrics $REF/dvae-cpu "$RUNS/dvae-gpu" --out "$OUTDIR/compare-dvae.json"'
step prior 80 'cp -r models/default/dvae "$RUNS/dvae-bundled" && gpu_run prior-gpu train-prior $PRIOR_ARGS --dvae "$RUNS/dvae-bundled" --tokenizer $REF/prior-cpu/tokenizer.json; gpu_estimate prior-gpu; python3 bench/cuda-compare.py metrics $REF/prior-cpu "$RUNS/prior-gpu" --out "$OUTDIR/compare-prior.json"; python3 bench/cuda-compare.py grids $REF/prior-cpu-grids/train.npy "$RUNS"/dvae-bundled/token-cache/*/train.npy --out "$OUTDIR/compare-prior-data.json"'
# prior-nccl: one training of the prior as one data-parallel rank (dalle launch --nproc 1): the same loop through NCCL
# (bucketed all-reduce of device buffers, the ranks' agreements), its losses against the CPU reference's.
step prior-nccl 60 '[ -d "$RUNS/dvae-bundled" ] || cp -r models/default/dvae "$RUNS/dvae-bundled"; export DALLE_NCCL_LIB=${DALLE_NCCL_LIB:-$(nccl_lib)}; node bin/run.js launch --nproc 1 -- train-prior $PRIOR_ARGS --dvae "$RUNS/dvae-bundled" --tokenizer $REF/prior-cpu/tokenizer.json --out "$RUNS/prior-nccl" --device cuda --json > "$OUTDIR/prior-nccl.events.jsonl"; rc=$?; mkdir -p "$OUTDIR/prior-nccl"; cp "$RUNS/prior-nccl/metrics.jsonl" "$OUTDIR/prior-nccl/" 2> /dev/null; python3 bench/cuda-compare.py metrics $REF/prior-cpu "$RUNS/prior-nccl" --out "$OUTDIR/compare-prior-nccl.json"; exit $rc'
step prior-fp16 80 '[ -d "$RUNS/dvae-bundled" ] || cp -r models/default/dvae "$RUNS/dvae-bundled"; gpu_run prior-gpu-fp16 train-prior $PRIOR_ARGS --dvae "$RUNS/dvae-bundled" --tokenizer $REF/prior-cpu/tokenizer.json --precision fp16; rc=$?; gpu_estimate prior-gpu-fp16; exit $rc'
step generate 50 'gpu_run generate-gpu generate --captions $REF/captions.txt $GENERATE_ARGS; python3 bench/cuda-compare.py tokens $REF/generate-cpu "$RUNS/generate-gpu" --out "$OUTDIR/compare-generate.json"'
step step-emoji 75 'node dist/bench/cuda-prior-step.js --device cuda --reps 5 --out "$OUTDIR/speed-step-emoji.json"'
step step-large 110 'node dist/bench/cuda-prior-step.js --device cuda --reps 3 --batch 4 --set model.n_layers=24 --set model.n_heads=16 --set model.head_dim=64 --set model.text_len=256 --set model.text_vocab=16384 --set model.image_grid=32 --set model.image_vocab=8192 --set model.conv_kernel=11 --out "$OUTDIR/speed-step-large.json"'
step gen-speed 60 'node dist/bench/generate.js --device cuda --reps 2 --out "$OUTDIR/speed-generate.json"'
step ops 120 "$MOCHA dist/test/ops.test.js --grep 'on cuda:0' --reporter json --reporter-option output=\"\$OUTDIR/ops-cuda.json\""
step cuda-tests 120 "DALLE_CUDA_CHECK_BIG=1 $MOCHA dist/test/cuda/build.test.js dist/test/cuda/backend-wiring.test.js dist/test/cuda/gpu.test.js dist/test/cuda/attention-tc-gpu.test.js --reporter json --reporter-option output=\"\$OUTDIR/cuda-tests.json\""
step e2e 60 'node bin/run.js info --json > "$OUTDIR/info.json"; node dist/bench/cuda-e2e.js "$OUTDIR/e2e.json"'
step attention 150 'node dist/bench/cuda-attention.js --out "$OUTDIR/attention.json"'
step summary 15 'python3 bench/cuda-summary.py "$OUTDIR"'
[ "$DRY" = 1 ] || echo "cuda-check: done in $(($(date +%s) - START))s; summary: $OUTDIR/summary.json"
