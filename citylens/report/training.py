"""Training curves: loss and accuracy per epoch, one column per architecture."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["training_curves"]


def training_curves(training: pd.DataFrame) -> Figure:
    """Each model's training loss (top row) and train / val accuracy (bottom row).

    One column per architecture, one colour per seed; val accuracy solid, train accuracy
    (on the batches as they were fit) dashed, and a star on the epoch whose weights the
    model kept (its best val accuracy).

    Args:
        training: Rows of :data:`~citylens.tables.TRAINING`.

    Returns:
        The figure (2 rows × one column per architecture).
    """
    archs = list(dict.fromkeys(training.sort_values(["arch", "seed"]).arch))
    seeds = sorted(training.seed.unique())
    cmap = plt.get_cmap("tab10")
    color = {s: cmap(i % cmap.N) for i, s in enumerate(seeds)}
    fig, axes = plt.subplots(
        2,
        len(archs),
        figsize=(max(6.0, 3.2 * len(archs) + 0.6), 5.4),
        layout="constrained",
        squeeze=False,
        sharex="col",
    )
    for j, arch in enumerate(archs):
        loss_ax, acc_ax = axes[0, j], axes[1, j]
        for seed, rows in training[training.arch == arch].groupby("seed"):
            rows = rows.sort_values("epoch")
            c = color[seed]
            loss_ax.plot(rows.epoch, rows.loss, color=c, marker=".", label=f"seed {seed}")
            acc_ax.plot(rows.epoch, rows.val_acc, color=c, marker=".", label=f"val, seed {seed}")
            acc_ax.plot(rows.epoch, rows.train_acc, color=c, ls="--", label=f"train, seed {seed}")
            best = rows[rows.best]
            acc_ax.plot(best.epoch, best.val_acc, "*", color=c, ms=11, mec="black", mew=0.6)
        loss_ax.set_title(arch)
        loss_ax.set_ylabel("training loss" if j == 0 else "")
        acc_ax.set_ylabel("accuracy" if j == 0 else "")
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylim(0, 1.02)
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Training curves (★: the epoch whose weights were kept)")
    return fig
