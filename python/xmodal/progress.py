"""Progress bars for long work (tqdm when installed and enabled, otherwise nothing)."""

from __future__ import annotations

import contextlib
import sys


def progress(iterable, description: str, *, enabled: bool = True, total=None, unit: str = "it"):
    """Wraps ``iterable`` in a tqdm bar on stderr when ``enabled`` and tqdm is importable."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=description, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass


@contextlib.contextmanager
def progress_bar(description: str, *, total=None, enabled: bool = True, unit: str = "sample"):
    """A bar advanced by hand (``bar.update(len(batch))``): work done in batches counts samples."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            enabled = False
    if not enabled:
        yield _Silent()
        return
    bar = tqdm(desc=description, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
