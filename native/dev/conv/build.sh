#!/usr/bin/env bash
# Builds the conv dev harness (native/dev/bin/conv_dev): the library's conv kernels plus this directory's reference
# and benchmark, outside node-gyp. Uses native/cpu/gemm*.cc when present, else naive_gemm.cc.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=native/dev/bin/conv; mkdir -p "$out"
INC="-Inative/src -Inative/cpu -Inode_modules/node-addon-api -I/usr/include/node"
BASE="-std=c++17 -O3 -fno-math-errno -Wall -Wno-sign-compare -DDALLE_X86=1 -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS $INC"
AVX2="-mavx2 -mfma -mf16c"
AVX512="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c"
objs=(); pids=()
cc() { local src="$1"; shift; local o="$out/$(basename "${src%.*}").o"; g++ $BASE "$@" -c "$src" -o "$o" & objs+=("$o"); pids+=($!); }
for f in native/src/threadpool.cc native/src/cpu_features.cc native/src/error.cc native/src/allocator.cc \
         native/src/napi_util.cc native/cpu/conv.cc native/cpu/pool.cc native/dev/conv/conv_dev.cc; do
  [ -f "$f" ] && cc "$f" ${TILE_FLAGS:-}
done
cc native/cpu/conv_avx2.cc $AVX2 ${TILE_FLAGS:-}
cc native/cpu/conv_avx512.cc $AVX512 ${TILE_FLAGS:-}
cc native/cpu/conv_winograd_avx512.cc $AVX512 ${TILE_FLAGS:-}
cc native/cpu/conv_dw1x1_avx512.cc $AVX512 ${TILE_FLAGS:-}
if [ -f native/cpu/gemm.cc ]; then
  for f in native/cpu/gemm*.cc; do
    case "$f" in *_avx512.cc) cc "$f" $AVX512 ;; *_avx2.cc) cc "$f" $AVX2 ;; *) cc "$f" ;; esac
  done
else
  cc native/dev/conv/naive_gemm.cc
fi
for p in "${pids[@]}"; do wait "$p" || { echo "build failed" >&2; exit 1; }; done
# The N-API entry points are never called here: stub the napi_* C functions they reference.
nm -u "${objs[@]}" 2>/dev/null | awk '$2 ~ /^napi_/ {print $2}' | sort -u |
  awk 'BEGIN {print "#include <cstdlib>"} {print "extern \"C\" void " $1 "() { abort(); }"}' > "$out/napi_stubs.cc"
g++ -c "$out/napi_stubs.cc" -o "$out/napi_stubs.o"
g++ -o native/dev/bin/conv_dev "${objs[@]}" "$out/napi_stubs.o" -lpthread
echo "built native/dev/bin/conv_dev"
