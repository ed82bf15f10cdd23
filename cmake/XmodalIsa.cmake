# CPU instruction-set variants of the kernels library (issue 16).
#
# A portable build compiles the hot kernels once per x86-64 micro-architecture level and links
# each set into its own copy of libxmodal_kernels.so, all with the same soname:
#
#   lib/libxmodal_kernels.so                          baseline  (x86-64-v2: SSE4.2, POPCNT)
#   lib/glibc-hwcaps/x86-64-v3/libxmodal_kernels.so   avx2      (AVX2, FMA, BMI2, F16C)
#   lib/glibc-hwcaps/x86-64-v4/libxmodal_kernels.so   avx512    (AVX-512 F/BW/CD/DQ/VL)
#
# Whole libraries, not functions, are the unit of dispatch because the kernels' inline header
# code (distances, sorts, tiles) is shared between translation units: functions compiled for
# two levels inside one library would let the linker keep an AVX-512 copy of an inline helper
# that baseline code then calls. One variant per library cannot mix them. The dynamic loader
# picks the best directory the CPU supports (glibc >= 2.33 "glibc-hwcaps" subdirectories, for
# C++ programs too); the Python package loads its choice explicitly (xmodal/_backend.py, with
# XMODAL_ISA to force one). Only the sources of the hot kernels are compiled per level: the
# rest is compiled once at the baseline and linked into every variant.
#
# Every level compiles with -ffp-contract=off, so no level fuses a*b+c where another rounds
# twice: all variants return bit-identical results (tests/test_isa.py checks it).
#
# Sets XMODAL_ISA_LEVELS (names), XMODAL_ISA_FLAGS_<level>, XMODAL_ISA_DIR_<level> (relative
# directory under lib/) and XMODAL_ISA_SUMMARY (for the build line).

set(XMODAL_ISA_LEVELS "")
set(_xmodal_x86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(_xmodal_x86 ON)
endif()

function(_xmodal_level_flags out march fallback)
  # -march=x86-64-vN needs GCC 11 / Clang 12; older compilers get the same feature list spelled out.
  string(MAKE_C_IDENTIFIER "XMODAL_HAS_MARCH_${march}" _var)
  check_cxx_compiler_flag("-march=${march}" ${_var})
  if(${_var})
    set(${out} "-march=${march};-mtune=generic" PARENT_SCOPE)
  else()
    set(${out} "${fallback}" PARENT_SCOPE)
  endif()
endfunction()

include(CheckCXXCompilerFlag)
if(XMODAL_NATIVE)
  check_cxx_compiler_flag(-march=native XMODAL_HAS_MARCH_NATIVE)
  set(XMODAL_ISA_LEVELS native)
  set(XMODAL_ISA_DIR_native "")
  if(XMODAL_HAS_MARCH_NATIVE)
    set(XMODAL_ISA_FLAGS_native -march=native)
  endif()
  set(XMODAL_ISA_SUMMARY "native (-march=native, this machine only; XMODAL_NATIVE=ON)")
elseif(_xmodal_x86)
  set(_v2 -msse3 -mssse3 -msse4.1 -msse4.2 -mpopcnt -mcx16 -msahf)
  set(_v3 ${_v2} -mavx -mavx2 -mfma -mbmi -mbmi2 -mf16c -mlzcnt -mmovbe -mxsave)
  set(_v4 ${_v3} -mavx512f -mavx512bw -mavx512cd -mavx512dq -mavx512vl)
  _xmodal_level_flags(XMODAL_ISA_FLAGS_baseline x86-64-v2 "${_v2}")
  _xmodal_level_flags(XMODAL_ISA_FLAGS_avx2 x86-64-v3 "${_v3}")
  _xmodal_level_flags(XMODAL_ISA_FLAGS_avx512 x86-64-v4 "${_v4}")
  set(XMODAL_ISA_LEVELS baseline avx2 avx512)
  set(XMODAL_ISA_DIR_baseline "")
  set(XMODAL_ISA_DIR_avx2 "glibc-hwcaps/x86-64-v3/")
  set(XMODAL_ISA_DIR_avx512 "glibc-hwcaps/x86-64-v4/")
  set(XMODAL_ISA_SUMMARY "baseline (x86-64-v2), avx2 (x86-64-v3), avx512 (x86-64-v4), picked at import")
else()
  # aarch64 (NEON is part of the baseline), and any other target: the compiler's defaults.
  set(XMODAL_ISA_LEVELS baseline)
  set(XMODAL_ISA_DIR_baseline "")
  set(XMODAL_ISA_FLAGS_baseline "")
  set(XMODAL_ISA_SUMMARY "baseline (${CMAKE_SYSTEM_PROCESSOR} compiler defaults)")
endif()
