"""Progress bars for long work (tqdm when installed and enabled, otherwise nothing)."""

from __future__ import annotations

import sys


def progress(iterable, description: str, *, enabled: bool = True, total=None):
    """Wraps ``iterable`` in a tqdm bar on stderr when ``enabled`` and tqdm is importable."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=description, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)
