# Installs the kernels library with every CPU variant (and the CUDA library of a CUDA build),
# the op contracts (headers) and a CMake package, so that C++ programs can
# `find_package(xmodal CONFIG)` and link `xmodal::kernels` without Python or torch (examples/cpp).
# For a wheel the same files go inside the package (xmodal/lib, xmodal/include);
# `python -m xmodal.cmake_dir` prints where.

include(CMakePackageConfigHelpers)

foreach(level IN LISTS XMODAL_ISA_LEVELS)
  if(level STREQUAL XMODAL_ISA_LOWEST)
    install(TARGETS xmodal_kernels_${level} EXPORT xmodalTargets
            LIBRARY DESTINATION "${XMODAL_INSTALL_LIBDIR}")
  else()
    install(TARGETS xmodal_kernels_${level}
            LIBRARY DESTINATION "${XMODAL_INSTALL_LIBDIR}/${XMODAL_ISA_DIR_${level}}")
  endif()
endforeach()
if(XMODAL_WITH_CUDA)
  install(TARGETS xmodal_cuda EXPORT xmodalTargets LIBRARY DESTINATION "${XMODAL_INSTALL_LIBDIR}")
endif()

install(FILES "${PROJECT_BINARY_DIR}/lib/xmodal_isa_variants.txt" DESTINATION "${XMODAL_INSTALL_LIBDIR}")

# The contracts: csrc/ops/<op>/*.h and the common headers they include, under include/xmodal/
# (so `#include <xmodal/ops/knn/knn.h>`; the headers' own "common/..." includes resolve through
# include/xmodal, which the target adds).
install(DIRECTORY csrc/ops csrc/common DESTINATION "${XMODAL_INSTALL_INCLUDEDIR}/xmodal"
        FILES_MATCHING PATTERN "*.h")

set(XMODAL_CMAKE_DIR "${XMODAL_INSTALL_LIBDIR}/cmake/xmodal")
install(EXPORT xmodalTargets NAMESPACE xmodal:: DESTINATION "${XMODAL_CMAKE_DIR}")
configure_package_config_file(cmake/xmodalConfig.cmake.in "${PROJECT_BINARY_DIR}/xmodalConfig.cmake"
                              INSTALL_DESTINATION "${XMODAL_CMAKE_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/xmodalConfigVersion.cmake"
                                 VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/xmodalConfig.cmake" "${PROJECT_BINARY_DIR}/xmodalConfigVersion.cmake"
        DESTINATION "${XMODAL_CMAKE_DIR}")
