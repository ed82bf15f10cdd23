"""Model directories on disk: what counts as one, writing without ever losing data, reading with
one-line errors.

A model directory holds ``config.json`` (``"format": "xmodal-model/1"``, the method, its
options, fit-time facts) and ``model.safetensors`` (every array; no pickle). ``xmodal test``
may add ``report.md``, ``report.json`` and ``maps/``. The save rules (issue 10):

- ``path`` does not exist, or is an empty folder: the model is written there.
- ``path`` is an xmodal model directory holding only what xmodal writes into one: it is
  replaced atomically.
- anything else (a file, a symbolic link, a folder with other content): refused with a
  one-line error, unless ``overwrite=True``, which replaces what is at ``path`` (a link is
  replaced, never followed) and never touches anything outside it.

"Atomically" means a reader, or the next run after a crash, a SIGINT or a SIGKILL at any
instant, finds either the complete previous model or the complete new one: the new model is
written into a hidden sibling folder ``.<name>.xmodal-tmp-<pid>-<random>`` and swapped with
the old one in a single ``renameat2(RENAME_EXCHANGE)`` (two renames where the file system
cannot exchange; then a crash between them leaves the old model in ``.<name>.xmodal-old-*``,
which the next save or load puts back). Siblings left by a killed process are removed by the
next save to the same path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from ..io import check_output, follow_umask

FORMAT = "xmodal-model/1"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
XMODAL_ENTRIES = frozenset({CONFIG, WEIGHTS, "report.md", "report.json", "maps", "manifest.json"})
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` is a folder with xmodal's config.json (by its format key)."""
    try:
        document = json.loads((path / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def is_xmodal_entry(name: str) -> bool:
    """What xmodal writes into a model directory (``Detector.export`` adds ``graph.*.onnx``)."""
    return name in XMODAL_ENTRIES or (name.startswith("graph.") and name.endswith(".onnx"))


def replaceable(path: Path) -> bool:
    """A model directory that holds nothing but what xmodal writes into one."""
    return path.is_dir() and is_model_dir(path) and all(is_xmodal_entry(p.name) for p in path.iterdir())


def write(path, files: dict, *, overwrite: bool = False, option: str = "save(path)") -> Path:
    """Writes ``files`` (name -> function writing that file at the path it is given) as the
    model directory ``path`` under the rules of the module docstring."""
    target = check_output(path, option, directory=True, reusable=replaceable, overwrite=overwrite)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    tmp = parent / f".{target.name}.xmodal-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # mode 0777 & ~umask, like any folder the user creates
    try:
        for name, writer in files.items():
            writer(tmp / name)
            follow_umask(tmp / name)
            _fsync(tmp / name)
        _fsync(tmp)
        if target.exists() or target.is_symlink():
            _exchange(tmp, target)  # tmp now holds the previous content
        else:
            os.rename(tmp, target)
            return target
    except BaseException:
        _remove(tmp)
        raise
    _remove(tmp)
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> None:
    """Swaps the directory entries ``a`` and ``b`` atomically (Linux renameat2); where that is
    unavailable, two renames with the old content parked in ``.<name>.xmodal-old-*``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, f"cannot replace {b}: {os.strerror(code)}")
    parked = b.parent / f".{b.name}.xmodal-old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(b, parked)
    try:
        os.rename(a, b)
    except BaseException:
        os.rename(parked, b)
        raise
    os.rename(parked, a)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(target: Path) -> None:
    """Cleans up after a save to ``target`` that a killed process left unfinished: puts a
    parked previous model back if ``target`` is missing, removes stale temporary folders that
    hold only model files (anything else is left for the user to look at)."""
    prefix = f".{target.name}.xmodal-"
    if not target.parent.is_dir():
        return
    for sibling in list(target.parent.iterdir()):
        if not sibling.name.startswith(prefix):
            continue
        kind, _, rest = sibling.name[len(prefix) :].partition("-")
        pid = rest.partition("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if kind == "old" and not target.exists() and not target.is_symlink():
            os.rename(sibling, target)
        elif sibling.is_dir() and all(is_xmodal_entry(p.name) for p in sibling.iterdir()):
            shutil.rmtree(sibling, ignore_errors=True)


# --- reading ---------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch's shape errors span many)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config document, arrays) of the model directory ``path``, checked for what a tampered or
    truncated directory would break. Raises ValueError with one line naming the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        _recover(path)
    if not path.is_dir():
        msg = f"model directory not found: {path}" if not path.exists() else f"{path} is a file, not a model directory"
        raise ValueError(msg)
    config_file, weights_file = path / CONFIG, path / WEIGHTS
    for f in (config_file, weights_file):
        if not f.is_file():
            msg = f"{path} is not an xmodal model directory: {f.name} is missing"
            raise ValueError(msg)
    try:
        document = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"corrupt model config {config_file}: {one_line(exc)}"
        raise ValueError(msg) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        msg = f"{config_file} is not an xmodal model config (format {found!r}, expected {FORMAT!r})"
        raise ValueError(msg)
    for key, kind in (("method", str), ("config", dict), ("info", dict)):
        if key not in document:
            msg = f"corrupt model config {config_file}: the key {key!r} is missing"
            raise ValueError(msg)
        if not isinstance(document[key], kind):
            msg = (f"corrupt model config {config_file}: {key!r} must be a JSON "
                   f"{'string' if kind is str else 'object'}; got {type(document[key]).__name__}")
            raise ValueError(msg)
    try:
        state = load_file(str(weights_file))
    except (OSError, SafetensorError, ValueError, TypeError) as exc:
        msg = f"corrupt model weights {weights_file}: {one_line(exc)}"
        raise ValueError(msg) from exc
    for name, array in state.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            msg = f"corrupt model weights {weights_file}: array {name!r} holds NaN or infinity"
            raise ValueError(msg)
    return document, state


def check_state(weights_file: Path, state: dict[str, np.ndarray], spec: dict[str, tuple]) -> None:
    """Every array of ``spec`` (name -> expected shape, None for any size) is present, numeric
    and of that shape; a one-line ValueError naming the file otherwise."""
    for name, shape in spec.items():
        if name not in state:
            msg = f"corrupt model weights {weights_file}: the array {name!r} is missing"
            raise ValueError(msg)
        array = state[name]
        bad = array.dtype.kind not in "fiu" or array.ndim != len(shape)
        bad = bad or any(want is not None and got != want for got, want in zip(array.shape, shape, strict=False))
        if bad:
            expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
            msg = (f"corrupt model weights {weights_file}: array {name!r} is {array.dtype} {array.shape}, "
                   f"expected a numeric {expected} (does it belong to this config.json?)")
            raise ValueError(msg)
