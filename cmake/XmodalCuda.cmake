# Decides whether the CUDA kernels are built (XMODAL_CUDA = AUTO | ON | OFF) and enables the
# CUDA language. Included before any CUDA target exists because CMake fixes
# CMAKE_CUDA_ARCHITECTURES from the compiler default at enable_language(CUDA): setting it
# later is silently ignored.

set(XMODAL_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO (when nvcc is found), ON (required), OFF")
set_property(CACHE XMODAL_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${XMODAL_CUDA}" XMODAL_CUDA)
if(NOT XMODAL_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "XMODAL_CUDA must be AUTO, ON or OFF; got '${XMODAL_CUDA}'")
endif()

set(XMODAL_WITH_CUDA OFF)
if(NOT XMODAL_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(XMODAL_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES bin)
    if(XMODAL_NVCC)
      set(CMAKE_CUDA_COMPILER "${XMODAL_NVCC}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(XMODAL_WITH_CUDA ON)
  elseif(XMODAL_CUDA STREQUAL "ON")
    message(FATAL_ERROR
      "XMODAL_CUDA=ON but no CUDA compiler (nvcc) was found. Put nvcc on PATH or set CUDACXX, "
      "or build the CPU-only module with XMODAL_CUDA=OFF.")
  endif()
endif()

if(XMODAL_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # SASS for Turing, Ampere (A100, RTX 30xx, Jetson Orin = 87), Ada, Hopper; PTX of the newest
    # so that later GPUs JIT-compile it.
    set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;86-real;87-real;89-real;90-real;90-virtual")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "xmodal: building CUDA kernels (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES})")
else()
  message(STATUS "xmodal: building the CPU-only module (XMODAL_CUDA=${XMODAL_CUDA})")
endif()
