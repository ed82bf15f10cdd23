#!/usr/bin/env bash
# Native code health, as CI runs it (issue 11 item 8): fails when
#   (a) clang-format would change anything under csrc/ (the style is .clang-format), or
#   (b) the CPU-only module (XMODAL_CUDA=OFF) does not build warning-free with XMODAL_WERROR=ON.
# The build goes to a temporary directory outside the source tree, which is never modified.
# Needs: clang-format (pip install clang-format), cmake, a C++17 compiler with OpenMP, and
# nanobind + scipy-openblas32 importable by the python3 on PATH (pip install nanobind scipy-openblas32).
# Usage: tools/check_native.sh [--format-only | --build-only]
# Takes about a minute on two idle cores (the build; the format check is instant).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-all}"
status=0

need() {  # need TEST MESSAGE: fail early and clearly when a prerequisite is missing
  if ! eval "$1" >/dev/null 2>&1; then
    echo "tools/check_native.sh: $2" >&2
    exit 2
  fi
}
if [[ "$mode" != "--build-only" ]]; then
  need "command -v clang-format" "clang-format not found (pip install clang-format)"
fi
if [[ "$mode" != "--format-only" ]]; then
  need "command -v cmake" "cmake not found (pip install cmake ninja)"
  need "python3 -c 'import nanobind, scipy_openblas32'" \
    "python3 cannot import nanobind and scipy_openblas32 (pip install nanobind scipy-openblas32)"
fi

if [[ "$mode" != "--build-only" ]]; then
  echo "== clang-format --dry-run --Werror (csrc)"
  mapfile -t sources < <(git ls-files -co --exclude-standard -- 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh')
  if ! clang-format --dry-run --Werror "${sources[@]}"; then
    echo "clang-format: the files above differ from .clang-format; run: clang-format -i \$(git ls-files 'csrc/*')" >&2
    status=1
  fi
fi

if [[ "$mode" != "--format-only" ]]; then
  echo "== CPU-only build with -Werror (XMODAL_CUDA=OFF, XMODAL_WERROR=ON)"
  build="$(mktemp -d "${TMPDIR:-/tmp}/xmodal-check-native.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
  generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  # The same configuration as `pip install` (Release, portable CPU variants), without CUDA.
  if ! cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DSKBUILD=ON -DSKBUILD_PROJECT_VERSION=0.0.0 -DPython_EXECUTABLE="$(command -v python3)" \
      -DXMODAL_CUDA=OFF -DXMODAL_WERROR=ON >"$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    echo "configure failed" >&2
    exit 1
  fi
  if ! cmake --build "$build" --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" >"$build/build.log" 2>&1; then
    grep -E "error|warning" "$build/build.log" >&2 || cat "$build/build.log" >&2
    echo "the CPU-only build failed or warned (see above)" >&2
    status=1
  else
    echo "CPU-only build: no warnings in xmodal's sources"
  fi
fi
exit $status
