#!/usr/bin/env bash
# Benchmark set-up (never part of npm ci / npm test): installs the references the benchmarks compare against, and
# builds the small C reference programs in bench/ref/ into bench/out/.
#
# Adding to it: append Debian package names to PACKAGES (one line per benchmark, say which one needs them) and, for a
# C reference, a line to the "C references" section. Idempotent: a second run installs and rebuilds nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # gemm (bench/gemm.ts): OpenBLAS (OpenMP build so its threads do not fight PyTorch's) and jemalloc
  libopenblas-dev libopenblas0-openmp libjemalloc2
  # shared by the PyTorch comparisons (conv2d, attention, ...)
  python3-torch
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup.sh: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Make the OpenMP build the one that libopenblas.so.0 / libblas.so.3 resolve to (Debian's alternatives pick by
# priority; the pthread build may be installed as a dependency of libopenblas-dev).
arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
for alt in "libopenblas.so.0-$arch" "libblas.so.3-$arch" "liblapack.so.3-$arch"; do
  cand="$(update-alternatives --list "$alt" 2>/dev/null | grep openmp | head -n1 || true)"
  [ -n "$cand" ] && update-alternatives --set "$alt" "$cand" >/dev/null 2>&1 || true
done

mkdir -p bench/out
# C references: bench/out/<name> from bench/ref/<name>.c, rebuilt when the source is newer.
build_ref() {  # build_ref NAME EXTRA_FLAGS...
  local name="$1"; shift
  local src="bench/ref/$name.c" bin="bench/out/$name"
  [ -f "$src" ] || return 0
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
    echo "bench/setup.sh: building $bin"
    gcc -O2 -std=gnu11 -o "$bin" "$src" "$@"
  fi
}
build_ref openblas_gemm -I/usr/include/"$arch"/openblas-openmp -I/usr/include/"$arch" -lopenblas -lpthread -lm
