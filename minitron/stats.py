"""The statistics minitron reports. A measure over windows: the mean per label with its 95% interval (`ratio_ci`).
Comparisons over seeds, as the benchmarks report them: the mean ± standard deviation of each row, the paired
difference of two rows (seed by seed) with its 95% t-interval, and the verdict that calls a difference a tie unless
its interval on dev excludes 0 and the test split agrees on the sign."""
from __future__ import annotations

import math

import torch

# Student's t, the 0.975 quantile by degrees of freedom (beyond the table: the normal's 1.96 is within 4% from 30 on)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (the next tabled df below, so never narrower)."""
    if df < 1:
        raise ValueError("a t-interval needs at least two paired values")
    return T975[max(k for k in T975 if k <= df)] if df <= 30 else 1.96


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def paired(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """The mean of the paired differences a - b (the i-th of each from the same seed) and the half-width of its 95%
    t-interval; None with fewer than two pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired values need as many of each: {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    mean, sd = mean_sd([x - y for x, y in zip(a, b)])
    return mean, t975(len(a) - 1) * sd / math.sqrt(len(a))


def mean_of_means(groups: list[list[float]]) -> tuple[float, float]:
    """The mean over groups of each group's mean (the groups weighted equally, as a benchmark average weights its
    tasks) and the half-width of its 95% interval with the items as the unit: the groups independent, the variance
    is the sum of each group's variance of its mean, over the number of groups squared."""
    if any(len(g) < 2 for g in groups) or not groups:
        raise ValueError("an interval over items needs at least two in every group")
    k = len(groups)
    mean = sum(sum(g) / len(g) for g in groups) / k
    var = sum(mean_sd(g)[1] ** 2 / len(g) for g in groups) / k ** 2
    return mean, t975(sum(len(g) for g in groups) - k) * math.sqrt(var)


def verdict(dev: tuple[float, float] | None, test: tuple[float, float] | None, lower_is_better: bool = True) -> str:
    """'better' or 'worse' only where the dev interval excludes 0 and the test difference has the same sign; else a
    tie ('one seed' when there is no interval)."""
    if dev is None:
        return "one seed"
    if abs(dev[0]) <= dev[1]:
        return "tie"
    word = "better" if (dev[0] < 0) == lower_is_better else "worse"
    holds = test is not None and (test[0] < 0) == (dev[0] < 0)
    return word if holds else f"{word} on dev, not on test: tie"


def fmt_mean_sd(values: list[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.3f} ± {sd:.3f}" if len(values) > 1 else f"{mean:.3f}"


def fmt_interval(x: tuple[float, float] | None) -> str:
    return "–" if x is None else f"{x[0]:+.3f} ± {x[1]:.3f}"


def ratio_ci(sums: torch.Tensor, counts: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[float, float]:
    """The mean per counted label, sum(sums) / sum(counts) over the windows that count any label (or those `keep`
    marks), and the half-width of its 95% interval with the windows as the unit (the ratio estimator's standard
    error; for windows of equal counts, the standard error of the per-window means). Any ratio of two sums over the
    same windows, e.g. the share of a gap closed: sums = pruned - distilled, counts = pruned - teacher."""
    keep = counts > 0 if keep is None else keep
    sums, counts = sums[keep].double(), counts[keep].double()
    mean = float(sums.sum() / counts.sum())
    k = len(counts)
    if k < 2:
        return mean, float("nan")
    se = float(((sums - mean * counts).square().sum() / (k * (k - 1))).sqrt() / counts.mean().abs())
    return mean, 1.96 * se
