"""Sample sets as the methods read them: lazy views, batches, and where calibration images come from.

A dataset reader such as :class:`xmodal.data.MVTec3D` is a Sequence that loads a sample when it
is indexed. Everything here keeps it that way: :class:`SampleView` selects entries without
loading them (``--max-train``, the held-out calibration share), :func:`batches` loads one batch
at a time, so a training or test split never sits in memory as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np


class SampleView(Sequence):
    """The entries ``indices`` of a sample Sequence, loaded only when indexed.

    Args:
        base: the Sequence (a dataset reader, a list, another view).
        indices: positions in ``base`` (any iterable of ints; a ``range`` stays lazy).
    """

    def __init__(self, base: Sequence, indices) -> None:
        if isinstance(base, SampleView):  # a view of a view indexes the original directly
            indices = [base.indices[i] for i in indices]
            base = base.base
        self.base = base
        self.indices = indices if isinstance(indices, range) else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return SampleView(self, range(len(self))[index])
        return self.base[self.indices[index]]

    def __iter__(self) -> Iterator:
        for i in self.indices:
            yield self.base[i]

    def __repr__(self) -> str:
        return f"SampleView({self.base!r}, {len(self)} of {len(self.base)} entries)"


def as_sequence(samples: Iterable) -> Sequence:
    """``samples`` itself when it is a Sequence (read lazily); any other iterable is read into
    a list once (a generator cannot be read twice)."""
    if isinstance(samples, Sequence) and not isinstance(samples, (str, bytes)):
        return samples
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
        msg = f"samples must be a sequence or an iterable of xmodal.data.Sample; got {type(samples).__name__}"
        raise TypeError(msg)
    return list(samples)


def head(samples: Sequence, n: int) -> SampleView:
    """The first ``n`` entries, lazily."""
    return SampleView(samples, range(min(n, len(samples))))


def batches(samples: Iterable, size: int, description: str, *, enabled: bool = True) -> Iterator[list]:
    """Lists of at most ``size`` Samples (pairs and Samples accepted), loaded as they are needed,
    with a progress bar that counts samples."""
    from ..progress import progress_bar
    from .base import as_sample

    total = len(samples) if hasattr(samples, "__len__") else None
    with progress_bar(description, total=total, enabled=enabled) as bar:
        if isinstance(samples, Sequence):
            for first in range(0, len(samples), size):
                batch = [as_sample(samples[j]) for j in range(first, min(first + size, len(samples)))]
                yield batch
                bar.update(len(batch))
            return
        batch = []
        for sample in samples:
            batch.append(as_sample(sample))
            if len(batch) == size:
                yield batch
                bar.update(len(batch))
                batch = []
        if batch:
            yield batch
            bar.update(len(batch))


# --- calibration images ----------------------------------------------------------------------


def validation_split(samples) -> tuple[Sequence | None, str]:
    """The good images of the validation split that goes with a training split, if any.

    Recognised: a dataset with a ``calibration_split()`` method (returns good samples; the hook
    for readers of other layouts), :class:`xmodal.data.MVTec3D` / ``Eyecandies`` of split
    "train" whose category has a ``validation/good`` folder, and a
    :class:`xmodal.data.preprocess.BackgroundRemoved` wrapping one (the validation images go
    through the same preprocessing and cache). Views are looked through.
    """
    from ..data import MVTec3D
    from ..data.preprocess import BackgroundRemoved

    while isinstance(samples, SampleView):
        samples = samples.base
    hook = getattr(samples, "calibration_split", None)
    if callable(hook):
        found = hook()
        return (found, "the dataset's calibration split") if found is not None and len(found) else (None, "")
    wrapper = None
    if isinstance(samples, BackgroundRemoved):
        wrapper, samples = samples, samples.dataset
    if not isinstance(samples, MVTec3D) or samples.split != "train":
        return None, ""
    if not (samples.root / samples.category / "validation" / "good").is_dir():
        return None, ""
    found = type(samples)(samples.root, samples.category, "validation", defects=["good"])
    if len(found) == 0:
        return None, ""
    if wrapper is not None:
        found = BackgroundRemoved(found, wrapper.folder.parent, wrapper.params)
    return found, f"validation split of {samples.root / samples.category}"


def plan_calibration(samples: Sequence, validation, share: float, seed: int) -> tuple[Sequence, Sequence | None, str]:
    """(training samples, calibration samples or None, where they come from or why there are none).

    ``validation`` (good samples the caller names) wins; else the dataset's validation split;
    else ``max(2, round(share * N))`` training images chosen with ``seed`` are held out (at
    least one image must remain to train on). ``share == 0`` turns calibration off.
    """
    if share == 0:
        return samples, None, "calibration=0: no threshold"
    if validation is not None:
        validation = as_sequence(validation)
        if len(validation) < 2:
            msg = f"validation must hold at least 2 good Samples (a location and a scale); got {len(validation)}"
            raise ValueError(msg)
        return samples, validation, f"{len(validation)} good validation images given to fit"
    found, source = validation_split(samples)
    if found is not None and len(found) >= 2:
        return samples, found, f"{len(found)} good images of the {source}"
    n = len(samples)
    held = max(2, round(share * n))
    if n - held < 1:
        return samples, None, (f"only {n} training images: too few to hold out {held} for calibration "
                               "(give validation= samples or more training images)")
    chosen = np.sort(np.random.default_rng(seed).choice(n, held, replace=False))
    keep = np.setdiff1d(np.arange(n), chosen)
    source = f"{held} training images held out (calibration={share:g} of {n})"
    return SampleView(samples, keep.tolist()), SampleView(samples, chosen.tolist()), source


def check_share(value) -> float:
    """``calibration=``: a share in [0, 1)."""
    from .._arrays import number

    return number(value, "calibration", minimum=0.0, maximum=1.0, high_open=True)
