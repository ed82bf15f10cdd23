#!/usr/bin/env bash
# Compile check of the CPU kernels for aarch64 (Jetson, Graviton) with a cross compiler: every
# csrc/common/*.cpp and csrc/ops/*/*_cpu.cpp, with the flags of a portable build (no -march:
# NEON is part of the aarch64 baseline) and -Werror. Compiles only: linking would need an aarch64
# OpenBLAS, and the nanobind bindings an aarch64 Python. Needs aarch64-linux-gnu-g++
# (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu) and python3 with scipy-openblas32 (its
# cblas.h). Usage: tools/check_aarch64.sh [compiler]
set -euo pipefail
cd "$(dirname "$0")/.."
cxx="${1:-aarch64-linux-gnu-g++}"
command -v "$cxx" >/dev/null || { echo "tools/check_aarch64.sh: $cxx not found (apt-get install g++-aarch64-linux-gnu)" >&2; exit 2; }
blas_include="$(python3 -c 'import scipy_openblas32 as s; print(s.get_include_dir())')"
out="$(mktemp -d "${TMPDIR:-/tmp}/xmodal-aarch64.XXXXXX")"
trap 'rm -rf "$out"' EXIT
mapfile -t sources < <(ls csrc/common/*.cpp csrc/ops/*/*_cpu.cpp)
status=0
for src in "${sources[@]}"; do
  obj="$out/$(echo "$src" | tr / _).o"
  if ! "$cxx" -std=c++17 -O3 -fno-math-errno -ffp-contract=off -fopenmp -fPIC -Wall -Wextra -Werror -Icsrc \
      -I"$blas_include" -DXMODAL_BLAS_NAME='"scipy-openblas32"' -DXMODAL_ISA_NAME='"baseline"' -c "$src" -o "$obj"; then
    status=1
  fi
done
n_obj="$(ls "$out"/*.o 2>/dev/null | wc -l)"
echo "aarch64 ($("$cxx" -dumpfullversion)): $n_obj of ${#sources[@]} CPU kernel sources compiled warning-free"
file "$(ls "$out"/*.o | head -1)" | sed 's/^[^:]*: /first object: /'
exit $status
