#!/usr/bin/env bash
# `npm run bench`: set up the references (bench/setup.sh: Debian packages, C reference programs), then run every
# compiled benchmark dist/bench/*.js in name order, or only those named:
#   bash bench/run.sh            all benchmarks
#   bash bench/run.sh gemm conv2d   dist/bench/gemm.js and dist/bench/conv2d.js
# A new benchmark needs no edit here: add bench/NAME.ts (compiled by tsc to dist/bench/NAME.js). Extra packages or C
# references go in bench/setup.sh. Benchmarks run one after another (never in parallel: they time the same cores).
# A failing benchmark is reported and the others still run; the exit status says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! bash bench/setup.sh; then
  echo "bench/run.sh: bench/setup.sh failed; benchmarks run without their references" >&2
fi

if [ $# -gt 0 ]; then
  files=()
  for name in "$@"; do files+=("dist/bench/${name%.js}.js"); done
else
  shopt -s nullglob
  files=(dist/bench/*.js)
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "bench/run.sh: no compiled benchmarks in dist/bench (run: npx tsc -p tsconfig.json)" >&2
  exit 1
fi

status=0
for f in "${files[@]}"; do
  echo "=== $f"
  if ! node "$f"; then
    echo "bench/run.sh: $f failed" >&2
    status=1
  fi
done
exit $status
