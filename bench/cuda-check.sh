#!/usr/bin/env bash
# The GPU checks of the CUDA backend (native/cuda), for a machine with an NVIDIA GPU and the CUDA toolkit:
#   1. builds everything (npm ci, or `npm run install` in a checkout: the dalle_cuda gyp target compiles
#      native/cuda with nvcc; DALLE_CUDA_ARCH=80,90 for more GPUs than H100 / H200);
#   2. runs every CUDA op against its CPU reference on random inputs (test/cuda/gpu.test.ts via
#      src/core/cuda/check.ts), the prior's full-size masks included (DALLE_CUDA_CHECK_BIG=1);
#   3. times the sparse attention at 256 text + 32x32 image, 64-wide heads, fp16, against PyTorch SDPA flash
#      (bench/cuda-attention.ts; the PyTorch part runs when python3 imports torch with CUDA).
# cuBLASLt must be loadable (libcublasLt.so.13 or .12 on the library path) for the GEMM and conv2d checks.
#   bash bench/cuda-check.sh [--no-build] [cuda-attention options: --batch 4 --heads 16 --iters 20]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--no-build" ]; then
  shift
else
  DALLE_CUDA=1 npm run install
  npx tsc -p tsconfig.json
fi
node -e "const s = require('./dist/src/core/cuda').cudaStatus(); console.log(JSON.stringify(s, null, 2)); if (!s.available) process.exit(1)"
DALLE_CUDA_CHECK_BIG=1 npx mocha dist/test/cuda/build.test.js dist/test/cuda/plan.test.js dist/test/cuda/gpu.test.js
node dist/bench/cuda-attention.js "$@"
