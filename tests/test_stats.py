"""The seed comparisons the benchmarks publish: a paired 95% t-interval, and a tie unless dev excludes 0 and test
agrees."""
import math

import pytest

import torch

from minitron.stats import mean_of_means, mean_sd, paired, ratio_ci, t975, verdict
from minitron.tasks import benchmark_gap_ci, main_score, paired_benchmarks


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


def test_mean_of_means_by_hand():
    """A benchmark average weights its tasks equally; its interval sums each task's variance of its mean."""
    a, b = [1, 0, 1, 1], [0, 0, 1, -1, 0, 0]  # means 0.75 and 0, sample variances 0.25 and 0.4
    mean, half = mean_of_means([a, b])
    assert mean == pytest.approx(0.375)
    assert half == pytest.approx(t975(8) * math.sqrt((0.25 / 4 + 0.4 / 6) / 4))
    assert mean_of_means([[0.5] * 40, [-0.5] * 40]) == (pytest.approx(0.0), 0.0)
    with pytest.raises(ValueError):
        mean_of_means([[1.0], [1.0, 0.0]])


def test_paired_benchmarks_pair_documents():
    """Two models' task results, document by document: the difference of their mean main scores (acc_norm for
    HellaSwag, acc for the rest), with an interval narrower than the unpaired one when the models agree on most
    documents; perplexity tasks are not counted."""
    def result(acc: str, acc_norm: str) -> dict:
        return {"kind": "multiple_choice", "acc": acc.count("1") / 10, "acc_norm": acc_norm.count("1") / 10,
                "per_document": {"acc": acc, "acc_norm": acc_norm}}

    a = {"quiz": result("1111011100", "0" * 10), "mc_hellaswag": result("0" * 10, "1100000000"),
         "ppl": {"kind": "loglikelihood_rolling", "word_perplexity": 3.0}}
    b = {"quiz": result("1111011000", "1" * 10), "mc_hellaswag": result("1" * 10, "0100000000"),
         "ppl": {"kind": "loglikelihood_rolling", "word_perplexity": 9.0}}
    assert [main_score(t, a[t])[0] for t in a] == ["acc", "acc_norm", "word_perplexity"]
    paired = paired_benchmarks(a, b)  # one more right in each task by its main score
    diff, half, n = paired["difference"], paired["ci95"], paired["documents"]
    assert n == 20 and diff == pytest.approx(0.1)
    assert half == pytest.approx(mean_of_means([[0] * 7 + [1, 0, 0], [1] + [0] * 9])[1])
    unpaired = 1.96 * math.sqrt(sum(p * (1 - p) / 10 for p in (0.7, 0.6, 0.2, 0.1))) / 2
    assert half < unpaired
    assert paired_benchmarks(a, {**b, "quiz": {**b["quiz"], "per_document": {}}}) is None  # no scores: no pairing


def test_ratio_of_sums_over_windows_by_hand():
    """The share of a gap closed, sum(pruned - distilled) / sum(pruned - teacher) over the windows, with the ratio
    estimator's interval (windows as the unit): a window whose denominator is negative counts, one `keep` drops
    does not."""
    num, den = torch.tensor([2.0, 1.0, 3.0, 0.5, 9.0]), torch.tensor([4.0, 2.0, 4.0, -1.0, 9.0])
    keep = torch.tensor([True, True, True, True, False])
    r, half = ratio_ci(num, den, keep)
    assert r == pytest.approx(6.5 / 9.0)
    residuals = [2 - r * 4, 1 - r * 2, 3 - r * 4, 0.5 + r]
    assert half == pytest.approx(1.96 * math.sqrt(sum(x * x for x in residuals) / (4 * 3)) / (9.0 / 4))
    same = ratio_ci(torch.tensor([3.0, 5.0, 0.0]), torch.tensor([2.0, 4.0, 0.0]))  # a mean per label: 0 counts out
    assert same[0] == pytest.approx(8 / 6) and same == ratio_ci(torch.tensor([3.0, 5.0]), torch.tensor([2.0, 4.0]))


def test_benchmark_gap_closed_interval_by_hand():
    """The share of the teacher–pruned gap in mean accuracy closed, with the documents as the unit, each weighted by
    one over its task's documents: the ratio is that of the mean accuracies, its interval the ratio estimator's."""
    def task(acc: str) -> dict:
        return {"kind": "multiple_choice", "acc": acc.count("1") / len(acc), "per_document": {"acc": acc}}

    teacher = {"a": task("1111"), "b": task("11")}
    pruned = {"a": task("0001"), "b": task("00")}
    distilled = {"a": task("1001"), "b": task("10")}
    num = [(p - d) / n for docs, n in ((("0001", "1001"), 4), (("00", "10"), 2))
           for p, d in zip(*(map(int, x) for x in docs))]
    den = [(p - t) / n for docs, n in ((("0001", "1111"), 4), (("00", "11"), 2))
           for p, t in zip(*(map(int, x) for x in docs))]
    mean = lambda m: (m["a"]["acc"] + m["b"]["acc"]) / 2  # noqa: E731
    r = (mean(pruned) - mean(distilled)) / (mean(pruned) - mean(teacher))
    assert sum(num) / sum(den) == pytest.approx(r)
    residuals = [x - r * y for x, y in zip(num, den)]
    half = 1.96 * math.sqrt(sum(e * e for e in residuals) / (6 * 5)) / abs(sum(den) / 6)
    assert benchmark_gap_ci(teacher, pruned, distilled) == pytest.approx(half)
    assert benchmark_gap_ci(teacher, teacher, distilled) is None  # no gap to close
    assert benchmark_gap_ci(teacher, {**pruned, "b": {"kind": "multiple_choice", "acc": 0.0}}, distilled) is None
