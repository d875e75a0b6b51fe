"""Training curves: each model's meta.json history, one row per epoch."""

import matplotlib.pyplot as plt
import pandas as pd

from citylens.analysis.accuracy import training_table
from citylens.report.training import training_curves
from citylens.tables import TRAINING


def _history(accs: list[float]) -> list[dict]:
    return [
        {"epoch": e + 1, "lr": 1e-4, "loss": 1.0 / (e + 1), "train_acc": a + 0.05, "val_acc": a}
        for e, a in enumerate(accs)
    ]


METAS = {
    # out of order on purpose: rows come sorted by model, then epoch
    "vgg11-s1": {
        "arch": "vgg11",
        "seed": 1,
        "best_epoch": 2,
        "history": _history([0.5, 0.7])[::-1],
    },
    "vgg11-s0": {"arch": "vgg11", "seed": 0, "best_epoch": 3, "history": _history([0.5, 0.6, 0.8])},
    "simple-s0": {"arch": "simple", "seed": 0, "best_epoch": 1, "history": _history([0.9])},
}


def test_the_training_table_has_every_epoch_of_every_model_and_marks_the_kept_one():
    t = training_table(METAS)
    assert t.schema == TRAINING
    df = t.to_pandas()
    assert list(df.model) == ["simple-s0"] + ["vgg11-s0"] * 3 + ["vgg11-s1"] * 2
    assert list(df.epoch) == [1, 1, 2, 3, 1, 2]
    assert list(df.val_acc) == [0.9, 0.5, 0.6, 0.8, 0.5, 0.7]
    assert list(df.best) == [True, False, False, True, False, True]
    # a model's kept epoch is its best val accuracy
    kept = df[df.best].set_index("model").val_acc
    assert (kept == df.groupby("model").val_acc.max()).all()
    assert training_table({"x-s0": {"arch": "x", "seed": 0, "history": []}}).num_rows == 0


def test_training_curves_one_column_per_architecture_with_a_star_on_the_kept_epoch():
    df = training_table(METAS).to_pandas()
    fig = training_curves(df)
    axes = fig.axes
    assert [ax.get_title() for ax in axes[:2]] == ["simple", "vgg11"]
    vgg_acc = axes[3]  # bottom row, vgg11
    lines = vgg_acc.get_lines()
    stars = [ln for ln in lines if ln.get_marker() == "*"]
    assert sorted((float(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars) == [
        (2.0, 0.7),
        (3.0, 0.8),
    ]
    # one val and one train curve per seed, the train one dashed
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 2
    assert pd.Series(dashed[0].get_ydata()).round(2).tolist() == [0.55, 0.65, 0.85]
    plt.close(fig)
