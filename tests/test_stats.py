"""The seed comparisons the benchmarks publish: a paired 95% t-interval, and a tie unless dev excludes 0 and test
agrees."""
import math

import pytest

from minitron.stats import mean_sd, paired, t975, verdict


def test_paired_interval_by_hand():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, half-width t(2) * 0.1 / sqrt(3)
    mean, half = paired([1.1, 1.2, 1.3], [1.0, 1.0, 1.0])
    assert mean == pytest.approx(0.2)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert paired([1.0], [2.0]) is None
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])


def test_pairing_removes_the_seed_effect():
    """Seeds that move both rows alike cancel in the paired difference: a consistent gain is not a tie."""
    seeds = [0.0, 0.3, -0.3]
    a = [3.0 + s for s in seeds]
    b = [3.05 + s + e for s, e in zip(seeds, (0.001, -0.001, 0.0))]
    diff = paired(a, b)
    assert diff[0] == pytest.approx(-0.05) and diff[1] < 0.01
    assert verdict(diff, diff) == "better"


def test_verdicts():
    assert verdict((-0.05, 0.06), (-0.05, 0.06)) == "tie"  # the interval holds 0
    assert verdict((0.05, 0.01), (0.02, 0.03)) == "worse"
    assert verdict((-0.05, 0.01), (0.02, 0.01)) == "better on dev, not on test: tie"
    assert verdict((0.05, 0.01), (0.05, 0.01), lower_is_better=False) == "better"  # an accuracy
    assert verdict(None, None) == "one seed"


def test_t_quantiles_never_narrower_than_the_table():
    assert t975(2) == 4.303 and t975(11) == t975(10) > t975(12) and t975(1000) == 1.96
    assert mean_sd([2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        t975(0)
