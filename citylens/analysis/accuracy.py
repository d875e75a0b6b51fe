"""Each model's accuracy table (val / test and its explained images) and training curves."""

from __future__ import annotations

import pyarrow as pa

from citylens.analysis.bootstrap import percentile_interval, safe_ratio
from citylens.tables import ACCURACY, TRAINING

__all__ = ["accuracy_table", "training_table"]


def accuracy_table(
    trained: dict[str, dict],
    sums: dict | None,
    explained_true: bool,
    ci: float = 0.95,
    places: int | None = None,
) -> pa.Table:
    """One row per model.

    Args:
        trained: model name -> its training record (``arch``, ``seed``, ``val_acc``,
            ``test_acc``; the accuracies may be missing).
        sums: ``{model: [correct, n, Σ_w correct (B,), Σ_w n (B,)]}`` over the explained
            test images (:func:`citylens.analysis.reduce.accuracy_sums`; the resampled
            entries may be missing: no interval), or None.
        explained_true: Whether explanations target the true city (``explain.target:
            true``); only then is ``explained_acc`` (the share of explanations of the
            class the model predicted) filled: it is then ``acc``.
        ci: Interval coverage.
        places: Test places resampled (``n_places``).

    Returns:
        A table with schema :data:`~citylens.tables.ACCURACY`, models in sorted order.
    """
    rows = []
    for name in sorted(trained):
        rec = trained[name]
        row = {
            "model": name,
            "arch": rec["arch"],
            "seed": rec["seed"],
            "val_acc": rec.get("val_acc"),
            "test_acc": rec.get("test_acc"),
        }
        if sums and name in sums:
            hits = sums[name]
            row["acc"] = hits[0] / max(hits[1], 1)
            low = high = float("nan")
            if len(hits) > 2 and len(hits[2]):
                low, high = percentile_interval(safe_ratio(hits[2], hits[3]), ci, places)
            row.update(ci_low=float(low), ci_high=float(high), n_places=places)
            if explained_true:
                row.update(explained_acc=row["acc"], explained=int(hits[1]))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=ACCURACY)


def training_table(metas: dict[str, dict]) -> pa.Table:
    """Each model's training curve, one row per epoch.

    Args:
        metas: model name -> its checkpoint's ``meta.json`` (``arch``, ``seed``,
            ``best_epoch`` and ``history``: one dict per epoch with ``epoch, lr, loss,
            train_acc, val_acc``).

    Returns:
        A table with schema :data:`~citylens.tables.TRAINING`, models in sorted order and
        epochs in order.
    """
    rows = []
    for name in sorted(metas):
        meta = metas[name]
        for h in sorted(meta.get("history") or [], key=lambda h: h["epoch"]):
            rows.append(
                {
                    "model": name,
                    "arch": meta["arch"],
                    "seed": int(meta["seed"]),
                    "epoch": int(h["epoch"]),
                    "lr": float(h["lr"]),
                    "loss": float(h["loss"]),
                    "train_acc": float(h["train_acc"]),
                    "val_acc": float(h["val_acc"]),
                    "best": int(h["epoch"]) == meta.get("best_epoch"),
                }
            )
    return pa.Table.from_pylist(rows, schema=TRAINING)
