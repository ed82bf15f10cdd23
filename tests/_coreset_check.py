"""Property check of a greedy k-center selection against float64 arithmetic."""

import numpy as np


def assert_farthest_first(x, idx, start, rtol):
    """Checks that ``idx`` is a farthest-first selection of the rows of ``x``.

    ``idx[0] == start``, the picks are distinct, and every later pick is an unselected row whose
    float64 squared distance to its nearest earlier pick is at least ``(1 - rtol)`` times the
    largest such distance (``rtol = 0``: exactly the farthest; a float32 kernel needs about
    ``2 * D * 2**-24``). Raises AssertionError naming the first step that breaks this.
    """
    x = np.asarray(x, dtype=np.float64)
    idx = np.asarray(idx)
    assert idx[0] == start, f"idx[0] = {idx[0]}, expected start = {start}"
    assert len(set(idx.tolist())) == len(idx), "picks are not distinct"
    min_distance = np.full(len(x), np.inf)
    selected = np.zeros(len(x), dtype=bool)
    for step in range(1, len(idx)):
        previous = idx[step - 1]
        selected[previous] = True
        min_distance = np.minimum(min_distance, ((x - x[previous]) ** 2).sum(axis=1))
        farthest = np.where(selected, -np.inf, min_distance).max()
        pick = idx[step]
        assert not selected[pick], f"step {step}: row {pick} was already selected"
        assert min_distance[pick] >= farthest * (1.0 - rtol), (
            f"step {step}: row {pick} is at squared distance {min_distance[pick]!r} from the selection, "
            f"the farthest row at {farthest!r} (rtol {rtol})"
        )
