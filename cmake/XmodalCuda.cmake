# Decides whether the CUDA kernels are built (XMODAL_CUDA = AUTO | ON | OFF) and enables the
# CUDA language. Included before any CUDA target exists because CMake fixes
# CMAKE_CUDA_ARCHITECTURES from the compiler default at enable_language(CUDA): setting it
# later is silently ignored.

# AUTO builds CUDA only when nvcc AND a GPU are present, for that GPU's architecture (minutes
# of nvcc for hardware that is not there helps nobody); ON builds the full release list.
set(XMODAL_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO (nvcc and a GPU present: that GPU's architecture), ON (required; release architecture list), OFF")
set_property(CACHE XMODAL_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${XMODAL_CUDA}" XMODAL_CUDA)
if(NOT XMODAL_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "XMODAL_CUDA must be AUTO, ON or OFF; got '${XMODAL_CUDA}'")
endif()

set(XMODAL_WITH_CUDA OFF)
set(XMODAL_CUDA_REASON "XMODAL_CUDA=OFF")
if(NOT XMODAL_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(XMODAL_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES bin)
    if(XMODAL_NVCC)
      set(CMAKE_CUDA_COMPILER "${XMODAL_NVCC}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    if(XMODAL_CUDA STREQUAL "ON")
      message(FATAL_ERROR
        "XMODAL_CUDA=ON but no CUDA compiler (nvcc) was found. Put nvcc on PATH or set CUDACXX, "
        "or build the CPU-only module with XMODAL_CUDA=OFF.")
    endif()
    set(XMODAL_CUDA_REASON "XMODAL_CUDA=AUTO and no nvcc found")
  elseif(XMODAL_CUDA STREQUAL "ON")
    set(XMODAL_WITH_CUDA ON)
    set(XMODAL_CUDA_REASON "XMODAL_CUDA=ON")
  elseif(DEFINED CMAKE_CUDA_ARCHITECTURES OR DEFINED ENV{CUDAARCHS})
    set(XMODAL_WITH_CUDA ON)
    set(XMODAL_CUDA_REASON "XMODAL_CUDA=AUTO, nvcc found and the architectures given")
  else()
    # A GPU is present when the driver's nvidia-smi lists one; its compute capability (8.6)
    # becomes the only architecture (86-real).
    find_program(XMODAL_NVIDIA_SMI nvidia-smi)
    set(_xmodal_caps "")
    if(XMODAL_NVIDIA_SMI)
      execute_process(COMMAND "${XMODAL_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
                      OUTPUT_VARIABLE _xmodal_caps RESULT_VARIABLE _xmodal_smi_rc
                      OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET TIMEOUT 30)
      if(NOT _xmodal_smi_rc EQUAL 0)
        set(_xmodal_caps "")
      endif()
    endif()
    string(REGEX MATCHALL "[0-9]+\\.[0-9]+" _xmodal_caps "${_xmodal_caps}")
    if(_xmodal_caps)
      set(_xmodal_archs "")
      foreach(_cap IN LISTS _xmodal_caps)
        string(REPLACE "." "" _arch "${_cap}")
        list(APPEND _xmodal_archs "${_arch}-real")
      endforeach()
      list(REMOVE_DUPLICATES _xmodal_archs)
      set(CMAKE_CUDA_ARCHITECTURES "${_xmodal_archs}")
      set(XMODAL_WITH_CUDA ON)
      set(XMODAL_CUDA_REASON "XMODAL_CUDA=AUTO, nvcc and a GPU found: this GPU's architecture only")
    else()
      set(XMODAL_CUDA_REASON "XMODAL_CUDA=AUTO, nvcc found but no GPU (nvidia-smi lists none); XMODAL_CUDA=ON compiles all architectures")
    endif()
  endif()
endif()

if(XMODAL_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
    # SASS for Turing, Ampere (A100, RTX 30xx, Jetson Orin = 87), Ada, Hopper; PTX of the newest
    # so that later GPUs JIT-compile it.
    set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;86-real;87-real;89-real;90-real;90-virtual")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
endif()
