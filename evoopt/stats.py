"""Statistics shared by every layer: one mean ± std convention and paired comparisons.

Conventions (used by baselines, the campaign finish, the CLI and the report):

* ``mean_std(xs)`` is the sample mean and the **sample** standard deviation (``ddof=1``); one
  value has std ``0.0``; no value gives ``(None, None)``. ``None`` and non-finite values are
  dropped first.
* Optimizers evaluated on the same seeds are compared **paired by seed**: seed effects (data
  order, initialisation) are shared, so the standard error of the mean difference is the standard
  deviation of the per-seed differences over √n, not the unpaired ``√(s_a²/n + s_b²/n)``.

Only numpy and scipy are imported, so every layer may use this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

VERDICTS = ("better", "worse", "indistinguishable")


def mean_std(xs: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof=1) of the finite values of ``xs``; std 0.0 for one value,
    ``(None, None)`` for none."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not vals:
        return None, None
    a = np.asarray(vals, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(vals) > 1 else 0.0


@dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` on the same seeds: mean difference (a − b), paired SE, paired t-test.

    ``verdict`` is ``"better"`` when ``mean_diff > threshold_se · paired_se``, ``"worse"`` when
    ``mean_diff < −threshold_se · paired_se``, else ``"indistinguishable"``. ``ci95`` is the
    t-based 95 % interval of the mean difference. With one seed there is no spread to judge
    by: ``t``, ``p_value`` and ``ci95`` are ``None`` and the verdict is ``"indistinguishable"``.
    When every per-seed difference is the same non-zero number (``paired_se == 0``) the verdict
    follows its sign (``p_value`` 0.0); all differences zero give ``p_value`` 1.0.
    """

    n: int
    mean_diff: float
    paired_se: float
    t: float | None
    p_value: float | None
    ci95: tuple[float, float] | None
    threshold_se: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = None if self.ci95 is None else [self.ci95[0], self.ci95[1]]
        return d


def paired_comparison(a: Sequence[float], b: Sequence[float], *,
                      threshold_se: float = 2.0) -> PairedComparison:
    """Per-seed scores ``a`` and ``b`` (same seeds, same order): see :class:`PairedComparison`.

    Raises ValueError when the lengths differ, there are no pairs, or a value is not finite
    (record failures as a finite worst score, e.g. ``WORST_FITNESS``, not NaN).
    """
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs one score per seed on both sides, "
                         f"got {len(a)} and {len(b)} values")
    if not a:
        raise ValueError("paired comparison needs at least one seed")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired comparison needs finite scores (record failures as a finite "
                         "worst score, not NaN)")
    from scipy import stats as scipy_stats  # imported here: ~1 s, only when comparing

    d = x - y
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    se = sd / math.sqrt(n)
    t: float | None
    p: float | None
    ci: tuple[float, float] | None
    if n < 2:
        t = p = ci = None
    elif se == 0.0:
        # every difference is the same number: no spread to test against
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0.0 else 0.0
        ci = (mean, mean)
    else:
        t = mean / se
        p = float(2.0 * scipy_stats.t.sf(abs(t), df=n - 1))
        half = float(scipy_stats.t.ppf(0.975, df=n - 1)) * se
        ci = (mean - half, mean + half)
    if n < 2:
        verdict = "indistinguishable"  # one seed: no estimate of the spread at all
    elif se == 0.0:
        verdict = "better" if mean > 0 else "worse" if mean < 0 else "indistinguishable"
    elif mean > threshold_se * se:
        verdict = "better"
    elif mean < -threshold_se * se:
        verdict = "worse"
    else:
        verdict = "indistinguishable"
    return PairedComparison(n=n, mean_diff=mean, paired_se=se, t=t, p_value=p, ci95=ci,
                            threshold_se=float(threshold_se), verdict=verdict)


__all__ = ["VERDICTS", "PairedComparison", "mean_std", "paired_comparison"]
