"""Small file helpers shared by everything that writes results or models.

Two promises hold for every file xmodal writes:

- **Atomic**: a reader sees the old file or the complete new one, never half of one; a killed
  process leaves at most a hidden ``.tmp-*`` / ``.xmodal-tmp-*`` sibling behind.
- **The user's umask**: files are created with mode 0666 and folders with 0777, both filtered
  by the process umask (0644 / 0755 under the usual 022), never the 0600 / 0700 of
  ``tempfile``'s private files, which a colleague or a deployment user could not read.

:func:`check_output` validates an output path before any work is done, so that a mistyped
``--out`` fails in a second instead of after an hour of training.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path


class OutputPathError(ValueError):
    """An output path xmodal refuses to write (the message is one line naming it)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path next to ``path``; renames it onto ``path`` only on success, so
    readers never see a half-written file. The file is created empty (mode 0666 & ~umask)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{secrets.token_hex(6)}-{os.path.basename(path)}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        follow_umask(tmp)  # some writers (safetensors) create their file 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Gives a file xmodal wrote the mode a plain ``open`` would: 0666 & ~umask."""
    os.chmod(path, 0o666 & ~umask())


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both already resolved)."""
    return path == folder or folder in path.parents


def check_output(path: str | os.PathLike, option: str, *, directory: bool, protected: Iterable = (),
                 reusable: Callable[[Path], bool] | None = None, overwrite: bool = False) -> Path:
    """Validates an output path before anything is computed; returns it resolved.

    Refused (:class:`OutputPathError`, one line naming ``option`` and the path): the current
    folder or one of its ancestors (``.``, ``..``, ``~`` ...), a path equal to, inside or
    containing one of the ``protected`` folders (datasets and input folders are only read), a
    path whose nearest existing ancestor is not a writable folder, a directory where a file is
    expected or the reverse, and an existing path that xmodal may not replace: anything but an
    empty folder or a path ``reusable`` accepts (e.g. an earlier xmodal model), unless
    ``overwrite``.

    Args:
        path: the output path as the user gave it.
        option: how the user named it, e.g. "--out" or "save(path)".
        directory: whether the output is a folder (else a file).
        protected: folders that must not be written to (nor replaced).
        reusable: says whether an existing ``path`` holds only what xmodal wrote there.
        overwrite: the user allows replacing what is at ``path``.
    """
    given = os.fspath(path)
    if not given:
        raise OutputPathError(f"{option}: empty path")
    target = Path(given).expanduser().absolute()
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if is_within(cwd, resolved) or resolved == Path(resolved.anchor):
        raise OutputPathError(f"{option} {given}: refusing to write to the current folder or one of its parents; "
                              f"name a new folder such as {option} {Path(given) / 'xmodal-out'}")
    for folder in protected:
        folder = Path(folder).expanduser().resolve()
        if is_within(resolved, folder) or is_within(folder, resolved):
            raise OutputPathError(f"{option} {given}: lies inside (or contains) {folder}, which xmodal only reads; "
                                  "write outside it")
    if target.is_symlink() and not overwrite:
        raise OutputPathError(f"{option} {given}: is a symbolic link; remove it or pass --overwrite / overwrite=True "
                              "(only the link is replaced)")
    if target.exists() and not target.is_symlink():
        if directory and not target.is_dir():
            if not overwrite:
                raise OutputPathError(f"{option} {given}: is an existing file, not a folder; choose another path "
                                      "or pass --overwrite / overwrite=True to replace it")
        elif not directory and target.is_dir():
            raise OutputPathError(f"{option} {given}: is a folder; give a file name")
        elif not overwrite and not (directory and not any(target.iterdir())) and not (reusable and reusable(target)):
            what = "folder" if directory else "file"
            raise OutputPathError(f"{option} {given}: an existing {what} that xmodal did not write; choose another "
                                  "path or pass --overwrite / overwrite=True to replace it")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{option} {given}: {ancestor} is a file, so the folder cannot be created")
    if not _can_create_in(ancestor):
        raise OutputPathError(f"{option} {given}: the folder {ancestor} is not writable")
    return target


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be created in ``folder``: tried for real (and removed at once),
    since permission bits say nothing for root, read-only mounts or /proc."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    probe = folder / f".xmodal-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True
