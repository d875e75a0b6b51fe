"""Two studies (or two periods of one) side by side: what changed, and is it more than noise.

Pure: the analyze tables of study A and study B (pandas frames) in, one frame per
comparison out, each row with A's value, B's, the change ``B − A`` and an interval of
the change. The studies are independent samples (different images), so the change's
interval combines the two intervals each study reports: each half-width is read as
``z · se`` of a normal (``z`` of the coverage), and the change's half-width is
``z · √(se_A² + se_B²)`` — an approximation (a percentile interval need not be
symmetric) that the page states.

Those intervals resample places with the models held fixed. When the two studies use
the same models (B took A's with ``models.from``), that is the whole noise. When each
trained its own, a change also holds training noise: R_p^c averaged over several models
then adds the spread between them (``sd² / models`` per study) to each ``se²``; a change
of one model's accuracy, or of AR, has no such estimate and is not judged.

``verdict``: ``settled`` (the interval excludes 0), ``within noise``, ``no interval``
(either study has none, e.g. ``analysis.bootstrap: 0``) or ``not judged``.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = ["accuracy_change", "ar_change", "change_interval", "largest_changes", "object_change"]


def change_interval(
    a: np.ndarray,
    a_low,
    a_high,
    b: np.ndarray,
    b_low,
    b_high,
    ci: float = 0.95,
    extra_var=0.0,
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
        extra_var: ``(n,)`` or a number: variance the intervals leave out (e.g. between
            models trained anew), added to ``se_A² + se_B²``.

    Returns:
        The change and its interval (NaN where either interval is missing).
    """
    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    arr = [np.asarray(v, np.float64) for v in (a, a_low, a_high, b, b_low, b_high)]
    a, a_low, a_high, b, b_low, b_high = arr
    se_a, se_b = (a_high - a_low) / (2 * z), (b_high - b_low) / (2 * z)
    change = b - a
    half = z * np.sqrt(se_a**2 + se_b**2 + np.asarray(extra_var, np.float64))
    return change, change - half, change + half


def _verdict(low: np.ndarray, high: np.ndarray, judged) -> list[str]:
    judged = np.broadcast_to(np.asarray(judged, bool), low.shape)
    out = []
    for lo, hi, j in zip(low, high, judged):
        if not j:
            out.append("not judged")
        elif np.isnan(lo) or np.isnan(hi):
            out.append("no interval")
        else:
            out.append("settled" if lo > 0 or hi < 0 else "within noise")
    return out


def _joined(
    a: pd.DataFrame, b: pd.DataFrame, keys: list[str], value: str, ci: float, judged, extra=()
) -> pd.DataFrame:
    cols = [*keys, value, "ci_low", "ci_high", *extra]
    both = a[cols].merge(b[cols], on=keys, suffixes=("_a", "_b"))
    extra_var = 0.0
    if extra:  # the spread between a scope's models: sd² / models on each side
        extra_var = (both["sd_a"] ** 2 / both["models_a"]) + (both["sd_b"] ** 2 / both["models_b"])
        judged = np.asarray(judged, bool) & np.isfinite(extra_var.to_numpy(np.float64))
        extra_var = extra_var.fillna(0.0)
    change, low, high = change_interval(
        both[f"{value}_a"],
        both["ci_low_a"],
        both["ci_high_a"],
        both[f"{value}_b"],
        both["ci_low_b"],
        both["ci_high_b"],
        ci,
        extra_var,
    )
    out = both[[*keys, f"{value}_a", f"{value}_b"]].assign(
        change=change, change_low=low, change_high=high
    )
    return out.assign(verdict=_verdict(low, high, judged))


def accuracy_change(
    acc_a: pd.DataFrame, acc_b: pd.DataFrame, ci: float = 0.95, same_models: bool = True
) -> pd.DataFrame:
    """Per model in both studies: accuracy on its explained test images, A and B.

    Args:
        acc_a: A's rows of ACCURACY (``model, acc, ci_low, ci_high``).
        acc_b: B's.
        ci: The intervals' coverage.
        same_models: Both studies use the same models (else: not judged).
    """
    out = _joined(acc_a, acc_b, ["model"], "acc", ci, same_models)
    return out.sort_values("model", ignore_index=True)


def ar_change(
    kinds_a: pd.DataFrame, kinds_b: pd.DataFrame, ci: float = 0.95, same_models: bool = True
) -> pd.DataFrame:
    """Mean AR by kind (architectures, seeds, their difference), A and B (AR_KINDS rows)."""
    out = _joined(kinds_a, kinds_b, ["kind"], "mean_ar", ci, same_models)
    return out.sort_values("kind", ignore_index=True)


def object_change(
    means_a: pd.DataFrame,
    means_b: pd.DataFrame,
    theta: float,
    ci: float = 0.95,
    same_models: bool = True,
) -> pd.DataFrame:
    """R_p^c averaged over all models, per (city, object) at θ in both studies.

    Args:
        means_a: A's rows of OBJECT_MEANS (the ``models`` scope is used).
        means_b: B's.
        theta: The θ compared.
        ci: The intervals' coverage.
        same_models: Both studies use the same models; else the spread between each
            study's models joins the interval (one model: not judged).
    """

    def pick(d: pd.DataFrame) -> pd.DataFrame:
        return d[(d.scope == "models") & ((d.theta - theta).abs() < 1e-6)]

    extra = () if same_models else ("sd", "models")
    out = _joined(pick(means_a), pick(means_b), ["city", "class", "name"], "r_p", ci, True, extra)
    return out.sort_values(["city", "class"], ignore_index=True)


def largest_changes(objects: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Per city, the ``k`` objects whose R_p^c changed most (by ``|change|``)."""
    d = objects.assign(size=objects.change.abs()).sort_values(
        ["city", "size"], ascending=[True, False]
    )
    return d.groupby("city", sort=True).head(k).drop(columns="size").reset_index(drop=True)
