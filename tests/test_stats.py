"""Paired statistics: mean ± std convention, paired SE, t-test, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evoopt.stats import PairedComparison, mean_std, paired_comparison


def test_mean_std_convention() -> None:
    assert mean_std([]) == (None, None)
    assert mean_std([None, float("nan")]) == (None, None)
    assert mean_std([0.4]) == (0.4, 0.0)
    m, s = mean_std([0.1, 0.2, 0.6])
    assert m == pytest.approx(0.3)
    assert s == pytest.approx(float(np.std([0.1, 0.2, 0.6], ddof=1)))  # sample std


def test_shared_seed_effects_make_a_small_gain_significant_only_when_paired() -> None:
    # Seeds differ a lot (±0.05), the optimizer gain is small (+0.010 ± 0.002) but consistent.
    seed_effect = np.array([0.40, 0.47, 0.52, 0.43, 0.49, 0.45])
    gain = np.array([0.011, 0.009, 0.012, 0.008, 0.010, 0.010])
    a, b = list(seed_effect + gain), list(seed_effect)
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    unpaired_se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    assert abs(ma - mb) < 2 * unpaired_se  # unpaired: indistinguishable
    c = paired_comparison(a, b)
    assert c.verdict == "better" and c.n == 6
    assert c.mean_diff == pytest.approx(0.010)
    assert c.paired_se == pytest.approx(np.std(gain, ddof=1) / math.sqrt(6))
    assert c.paired_se < unpaired_se / 10
    assert c.ci95[0] < c.mean_diff < c.ci95[1] and c.ci95[0] > 0
    assert paired_comparison(b, a).verdict == "worse"


def test_p_value_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.03, 7)
    b = a - rng.normal(0.004, 0.01, 7)
    c = paired_comparison(list(a), list(b))
    ref = scipy_stats.ttest_rel(a, b)
    assert c.t == pytest.approx(float(ref.statistic))
    assert c.p_value == pytest.approx(float(ref.pvalue))
    ci = ref.confidence_interval(0.95)
    assert c.ci95 == pytest.approx((float(ci.low), float(ci.high)))


def test_degenerate_cases() -> None:
    same = paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.mean_diff == 0.0 and same.p_value == 1.0 and same.verdict == "indistinguishable"
    shifted = paired_comparison([0.75, 0.625, 0.5], [0.5, 0.375, 0.25])  # exact: all +0.25
    assert shifted.paired_se == 0.0 and shifted.p_value == 0.0 and shifted.verdict == "better"
    assert paired_comparison([0.25, 0.5], [0.5, 0.75]).verdict == "worse"
    one = paired_comparison([0.6], [0.5])
    assert one.verdict == "indistinguishable" and one.p_value is None and one.n == 1
    small = paired_comparison([0.50, 0.52, 0.51], [0.50, 0.50, 0.52], threshold_se=2.0)
    assert small.verdict == "indistinguishable"
    d = small.to_dict()
    assert set(d) == {"n", "mean_diff", "paired_se", "t", "p_value", "ci95", "threshold_se",
                      "verdict"} and isinstance(d["ci95"], list)
    assert isinstance(small, PairedComparison)


def test_unpaired_or_empty_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="one score per seed"):
        paired_comparison([0.5, 0.6], [0.5])
    with pytest.raises(ValueError, match="at least one"):
        paired_comparison([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_comparison([0.5, float("nan")], [0.5, 0.4])
