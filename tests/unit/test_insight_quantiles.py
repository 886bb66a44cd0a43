"""Percentiles of several sorted runs together, without merging them (``tracker.insight``)."""

from __future__ import annotations

import random
from fractions import Fraction

from tracker.insight import MEDIAN, P90, quantile, quantile_of_runs, ranked


def test_ranked_matches_the_merged_runs() -> None:
    """Every rank of three runs (repeated values, an empty run) is the merged list's value."""
    runs = [[1, 1, 5, 9], [], [0, 1, 7, 7, 7, 12]]
    merged = sorted(value for run in runs for value in run)
    assert [ranked(runs, rank) for rank in range(len(merged))] == merged


def test_quantiles_match_the_merged_runs() -> None:
    """Median, p90 and odd fractions of random runs equal those of the merged values."""
    rng = random.Random(22)
    for _ in range(200):
        runs = [
            sorted(rng.randrange(-(10**13), 10**13) for _ in range(rng.randrange(0, 40)))
            for _ in range(rng.randrange(1, 5))
        ]
        merged = sorted(value for run in runs for value in run)
        if not merged:
            continue
        for p in (MEDIAN, P90, Fraction(0), Fraction(1), Fraction(1, 3)):
            assert quantile_of_runs(runs, p) == quantile(merged, p)
