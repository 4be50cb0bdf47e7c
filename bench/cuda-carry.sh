#!/usr/bin/env bash
# Prepares .device/, the one folder a device machine without node needs next to a copy of the working tree (the
# device tool's `carry: [".device"]`), for bench/cuda-check.sh:
#   .device/node.xz          this machine's node, stripped, xz-compressed (remade only when node changes);
#   .device/runtime.tar.xz   dist/ (no source maps or .d.ts), build/Release/{dalle_native,dalle_cuda}.node and
#                            dalle_cuda.json, node_modules/ without what the GPU checks never load (onnxruntime-node,
#                            tokenizers, typescript, @iconify-json, @types, caches), and node's N-API headers (without
#                            openssl) as .device/include/node, for an nvcc rebuild there.
# node_modules/ (about 490 MiB) and the node binary (about 95 MiB) cannot travel as they are: the whole carried tree
# (tracked and untracked files, plus .device/) must stay under 64 MiB, which this script checks and prints.
#   .device/emoji, .device/ref  with --refs: the emoji subset and the CPU side of the GPU-vs-CPU runs (bench/cuda-runs.sh:
#                            train-dvae, train-prior, generate with --device cpu; only what the comparisons read is kept:
#                            metrics.jsonl, config.yaml, the tokenizer, the CPU's token grids, results.jsonl; the
#                            commands in .device/ref/commands.txt). About 15 minutes on 2 cores; made once.
#   bash bench/cuda-carry.sh [--refs]   (compiles with tsc first: dist/ must match the sources)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=$((64 * 1024 * 1024))
mkdir -p .device
exclude_file=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude_file")"
grep -qx '/.device/' "$exclude_file" 2>/dev/null || echo '/.device/' >> "$exclude_file"

if [ "${1:-}" = "--refs" ]; then
  # shellcheck source=bench/cuda-runs.sh
  source bench/cuda-runs.sh
  work=$(mktemp -d)
  rm -rf .device/emoji .device/ref
  mkdir -p .device/ref/dvae-cpu .device/ref/prior-cpu .device/ref/prior-cpu-grids .device/ref/generate-cpu
  run() { echo "dalle $*" >> .device/ref/commands.txt; node bin/run.js "$@" > "$work/last.log" 2>&1 || { tail -5 "$work/last.log" >&2; exit 1; }; }
  # shellcheck disable=SC2086
  {
    run dataset emoji $EMOJI_ARGS -o .device/emoji
    run train-dvae $DVAE_ARGS --out "$work/dvae-cpu" --device cpu --threads 2
    cp -r models/default/dvae "$work/dvae-bundled"
    run train-prior $PRIOR_ARGS --dvae "$work/dvae-bundled" --out "$work/prior-cpu" --device cpu --threads 2
    printf '%s\n' "$GENERATE_CAPTIONS" > .device/ref/captions.txt
    run generate --captions .device/ref/captions.txt $GENERATE_ARGS --out "$work/generate-cpu" --device cpu --threads 2
  }
  cp "$work"/dvae-cpu/{metrics.jsonl,config.yaml} .device/ref/dvae-cpu/
  cp "$work"/prior-cpu/{metrics.jsonl,config.yaml,tokenizer.json} .device/ref/prior-cpu/
  cp "$work"/dvae-bundled/token-cache/*/train.npy .device/ref/prior-cpu-grids/
  cp "$work"/generate-cpu/{results.jsonl,generation.json} .device/ref/generate-cpu/
  rm -rf "$work"
fi

npx tsc -p tsconfig.json || echo "cuda-carry: tsc reported type errors (dist/ was still emitted)"
for f in build/Release/dalle_native.node build/Release/dalle_cuda.node; do
  [ -f "$f" ] || { echo "cuda-carry: $f is missing: build it first (npm run install)" >&2; exit 1; }
done

node_bin=$(command -v node)
stamp="$(node --version) $(stat -c %s-%Y "$(readlink -f "$node_bin")")"
if [ ! -f .device/node.xz ] || [ "$(cat .device/node.stamp 2>/dev/null)" != "$stamp" ]; then
  echo "cuda-carry: compressing $node_bin (a few minutes, once per node version)"
  strip -o .device/node.tmp "$(readlink -f "$node_bin")" 2>/dev/null || cp "$(readlink -f "$node_bin")" .device/node.tmp
  xz -9 -T0 -c .device/node.tmp > .device/node.xz.tmp
  mv .device/node.xz.tmp .device/node.xz
  rm -f .device/node.tmp
  echo "$stamp" > .device/node.stamp
fi

headers=$(dirname "$(readlink -f "$node_bin")")/../include/node
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
if [ -f "$headers/node_api.h" ]; then
  mkdir -p "$staging/.device/include"
  cp -r "$headers" "$staging/.device/include/node"
  rm -rf "$staging/.device/include/node/openssl"
fi
tar -cJf .device/runtime.tar.xz.tmp --exclude='*.map' --exclude='*.d.ts' \
  --exclude=node_modules/onnxruntime-node --exclude=node_modules/onnxruntime-common --exclude=node_modules/tokenizers \
  --exclude=node_modules/typescript --exclude=node_modules/@iconify-json --exclude=node_modules/@types \
  --exclude=node_modules/.cache \
  dist build/Release/dalle_native.node build/Release/dalle_cuda.node build/Release/dalle_cuda.json node_modules \
  -C "$staging" .
mv .device/runtime.tar.xz.tmp .device/runtime.tar.xz

tracked=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
device=$(du -sb .device | cut -f1)
total=$((tracked + device))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "cuda-carry: node.xz $(mib "$(stat -c %s .device/node.xz)"), runtime.tar.xz $(mib "$(stat -c %s .device/runtime.tar.xz)")"
echo "cuda-carry: working tree $(mib "$tracked") + .device $(mib "$device") = $(mib "$total") (limit 64 MiB)"
echo 'cuda-carry: run with carry [".device"] and the command: bash bench/cuda-check.sh'
[ "$total" -lt "$LIMIT" ] || { echo "cuda-carry: over the 64 MiB limit" >&2; exit 1; }
