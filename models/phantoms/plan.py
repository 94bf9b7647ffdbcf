"""Which cases a generator run makes: index, per-case seed and target category."""

from __future__ import annotations

import numpy as np


def case_plan(n: int, seed: int, start: int = 0) -> list[tuple[int, int, int]]:
    """(index, case seed, target category) for each case: categories balanced over the five
    classes in a seed-dependent order; case seeds derived from (seed, index)."""
    rng = np.random.default_rng(seed)
    categories = rng.permutation(np.arange(start, start + n) % 5)
    return [
        (i, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), int(c))
        for i, c in zip(range(start, start + n), categories, strict=True)
    ]
