"""``python -m xmodal.cmake_dir`` prints the folder of the installed CMake package.

C++ programs link xmodal's kernels (no Python or torch) with ``find_package(xmodal CONFIG)``
and the target ``xmodal::kernels``; pass this folder as ``-Dxmodal_DIR=...`` (examples/cpp).
"""

from __future__ import annotations

import os

from . import _isa

__all__ = ["cmake_dir"]


def cmake_dir() -> str:
    """The directory holding ``xmodalConfig.cmake`` (FileNotFoundError if this install has none)."""
    lib = _isa._library_dir()
    path = os.path.join(lib or "", "cmake", "xmodal")
    if lib is None or not os.path.isfile(os.path.join(path, "xmodalConfig.cmake")):
        msg = f"no xmodal CMake package beside xmodal._C (looked in {path}); reinstall xmodal with pip"
        raise FileNotFoundError(msg)
    return path


if __name__ == "__main__":
    print(cmake_dir())
