"""The accuracy table: each model's val / test accuracy and that of its explained images."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from citylens.tables import ACCURACY

__all__ = ["accuracy_table"]


def accuracy_table(
    trained: dict[str, dict], predictions: pa.Table | None, explained_true: bool
) -> pa.Table:
    """One row per model.

    Args:
        trained: model name -> its training record (``arch``, ``seed``, ``val_acc``,
            ``test_acc``; the accuracies may be missing).
        predictions: ``model, target, pred`` of every explanation row, or None.
        explained_true: Whether explanations target the true city (``explain.target:
            true``); only then is ``explained_acc`` the accuracy on the explained images.

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
        if predictions is not None and explained_true:
            sel = predictions.filter(pc.equal(predictions["model"], name))
            hits = int(np.sum(sel["target"].to_numpy() == sel["pred"].to_numpy()))
            row["explained_acc"] = hits / max(sel.num_rows, 1)
            row["explained"] = sel.num_rows
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=ACCURACY)
