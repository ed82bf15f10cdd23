# Locates the OpenBLAS shipped in the `scipy-openblas32` wheel (symbols prefixed `scipy_`).
# It is a runtime dependency of xmodal, so the module finds it next to itself in
# site-packages through a relative RPATH; xmodal/_backend.py also preloads it by path.

# A C++-only build may name the library itself (-DXMODAL_OPENBLAS_LIB_DIR=... and
# -DXMODAL_OPENBLAS_INCLUDE_DIR=..., e.g. from an unpacked scipy-openblas32 wheel); otherwise
# the Python on PATH (or Python_EXECUTABLE) is asked where its scipy-openblas32 is.
if(NOT XMODAL_OPENBLAS_LIB_DIR OR NOT XMODAL_OPENBLAS_INCLUDE_DIR)
  if(NOT Python_EXECUTABLE)
    find_package(Python 3.10 REQUIRED COMPONENTS Interpreter)
  endif()
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import scipy_openblas32 as s; print(s.get_include_dir()); print(s.get_lib_dir()); print(s.__version__)"
    OUTPUT_VARIABLE _xmodal_openblas_out
    RESULT_VARIABLE _xmodal_openblas_rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _xmodal_openblas_rc EQUAL 0)
    message(FATAL_ERROR "xmodal needs the scipy-openblas32 wheel at build time: pip install scipy-openblas32")
  endif()
  string(REPLACE "\n" ";" _xmodal_openblas_out "${_xmodal_openblas_out}")
  list(GET _xmodal_openblas_out 0 XMODAL_OPENBLAS_INCLUDE_DIR)
  list(GET _xmodal_openblas_out 1 XMODAL_OPENBLAS_LIB_DIR)
  list(GET _xmodal_openblas_out 2 XMODAL_OPENBLAS_VERSION)
endif()
if(NOT XMODAL_OPENBLAS_VERSION)
  set(XMODAL_OPENBLAS_VERSION "(version not given)")
endif()
find_library(XMODAL_OPENBLAS_LIBRARY NAMES scipy_openblas libscipy_openblas
             PATHS "${XMODAL_OPENBLAS_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)

add_library(xmodal_openblas INTERFACE)
target_include_directories(xmodal_openblas INTERFACE "${XMODAL_OPENBLAS_INCLUDE_DIR}")
target_link_libraries(xmodal_openblas INTERFACE "${XMODAL_OPENBLAS_LIBRARY}")
target_compile_definitions(xmodal_openblas INTERFACE XMODAL_BLAS_NAME="scipy-openblas32 ${XMODAL_OPENBLAS_VERSION}")
message(STATUS "xmodal: sgemm from ${XMODAL_OPENBLAS_LIBRARY}")
