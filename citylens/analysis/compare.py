"""Two studies (or two periods of one) side by side: what changed, and is it more than noise.

Pure: the analyze tables of study A and study B (pandas frames) in, one frame per
comparison out, each row with A's value, B's, the change ``B − A`` and an interval of
the change. The studies are independent samples (different images), so the change's
interval combines the two intervals each study reports: each half-width is read as
``z · se`` of a normal (``z`` of the coverage), and the change's half-width is
``z · √(se_A² + se_B²)``. That is an approximation — a percentile interval need not be
symmetric — and says so in the page; ``settled`` means the interval excludes 0.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = ["accuracy_change", "ar_change", "change_interval", "largest_changes", "object_change"]


def change_interval(
    a: np.ndarray, a_low, a_high, b: np.ndarray, b_low, b_high, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(B − A, low, high)`` of the change between two independent estimates.

    Args:
        a: A's estimates ``(n,)``.
        a_low: Their ``ci`` intervals' lower ends.
        a_high: Their upper ends.
        b: B's estimates.
        b_low: Their lower ends.
        b_high: Their upper ends.
        ci: The intervals' coverage (both studies', and the change's).

    Returns:
        The change and its interval (NaN where either interval is missing).
    """
    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    arr = [np.asarray(v, np.float64) for v in (a, a_low, a_high, b, b_low, b_high)]
    a, a_low, a_high, b, b_low, b_high = arr
    se_a, se_b = (a_high - a_low) / (2 * z), (b_high - b_low) / (2 * z)
    change = b - a
    half = z * np.sqrt(se_a**2 + se_b**2)
    return change, change - half, change + half


def _joined(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], value: str, ci: float):
    both = a[[*keys, value, "ci_low", "ci_high"]].merge(
        b[[*keys, value, "ci_low", "ci_high"]], on=keys, suffixes=("_a", "_b")
    )
    change, low, high = change_interval(
        both[f"{value}_a"],
        both["ci_low_a"],
        both["ci_high_a"],
        both[f"{value}_b"],
        both["ci_low_b"],
        both["ci_high_b"],
        ci,
    )
    out = both[[*keys, f"{value}_a", f"{value}_b"]].assign(
        change=change, change_low=low, change_high=high
    )
    return out.assign(settled=(low > 0) | (high < 0))


def accuracy_change(acc_a: pd.DataFrame, acc_b: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Per model in both studies: accuracy on its explained test images, A and B.

    Args:
        acc_a: A's rows of ACCURACY (``model, acc, ci_low, ci_high``).
        acc_b: B's.
        ci: The intervals' coverage.
    """
    return _joined(acc_a, acc_b, ["model"], "acc", ci).sort_values("model", ignore_index=True)


def ar_change(kinds_a: pd.DataFrame, kinds_b: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Mean AR by kind (architectures, seeds, their difference), A and B (AR_KINDS rows)."""
    return _joined(kinds_a, kinds_b, ["kind"], "mean_ar", ci).sort_values("kind", ignore_index=True)


def object_change(
    means_a: pd.DataFrame, means_b: pd.DataFrame, theta: float, ci: float = 0.95
) -> pd.DataFrame:
    """R_p^c averaged over all models, per (city, object) at θ in both studies.

    Args:
        means_a: A's rows of OBJECT_MEANS (the ``models`` scope is used).
        means_b: B's.
        theta: The θ compared.
        ci: The intervals' coverage.
    """

    def pick(d: pd.DataFrame) -> pd.DataFrame:
        return d[(d.scope == "models") & ((d.theta - theta).abs() < 1e-6)]

    out = _joined(pick(means_a), pick(means_b), ["city", "class", "name"], "r_p", ci)
    return out.sort_values(["city", "class"], ignore_index=True)


def largest_changes(objects: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Per city, the ``k`` objects whose R_p^c changed most (by ``|change|``)."""
    d = objects.assign(size=objects.change.abs()).sort_values(
        ["city", "size"], ascending=[True, False]
    )
    return d.groupby("city", sort=True).head(k).drop(columns="size").reset_index(drop=True)
