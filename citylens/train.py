"""Training one (architecture, seed): the paper's setup, as a plain function.

Cross-entropy, Adam (lr 1e-4, betas 0.9/0.999, eps 1e-8), learning rate × 0.1 every
10 epochs, seeded. The state with the best validation accuracy is kept (ties: the
earlier epoch) and scored on the test split. Ray Train wraps :func:`fit` unchanged;
batches come from any iterable, in memory here or from Ray Data on a cluster.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from citylens.config.schema import TrainSettings
from citylens.data.images import normalize
from citylens.models import CityNet, build_model, load_state_dict
from citylens.storage import filesystem

__all__ = [
    "TensorBatches",
    "TrainResult",
    "accuracy",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]

PAPER_SETTINGS = TrainSettings()  # frozen: safe as a default
Batch = tuple[torch.Tensor, torch.Tensor]  # uint8 images (B, 3, S, S), int64 labels (B,)


class TensorBatches:
    """In-memory batches over uint8 images, reshuffled each epoch with a seeded generator.

    Args:
        images: uint8 ``(N, 3, S, S)``.
        labels: int64 ``(N,)`` city indices.
        batch_size: Batch size.
        shuffle: Shuffle each epoch (training) or keep order (evaluation).
        seed: Shuffle seed; epoch ``e`` uses ``seed + e``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed

    def epoch(self, e: int) -> Iterator[Batch]:
        """Epoch ``e``'s batches (shuffled with seed + e when ``shuffle``)."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + e))
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.images[idx], self.labels[idx]

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained model at its best validation epoch (eval mode).
        history: One dict per epoch: ``epoch, lr, loss, train_acc, val_acc``.
        best_epoch: Epoch (1-based) whose state was kept.
        val_acc: Validation accuracy of the kept state.
        test_acc: Test accuracy of the kept state (None without test batches).
    """

    model: CityNet
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    val_acc: float = 0.0
    test_acc: float | None = None


PRECISIONS = ("fp32", "bf16")


def autocast(device: str, precision: str = "fp32"):
    """The forward pass's autocast: bfloat16 for ``bf16``, off (float32) for ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


@torch.no_grad()
def accuracy(
    model: nn.Module, batches: Iterable[Batch], device: str = "cpu", precision: str = "fp32"
) -> float:
    """Top-1 accuracy over batches (eval mode; the model's mode is restored)."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        with autocast(device, precision):
            logits = model(normalize(x.to(device)).contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    model.train(was)
    return correct / total if total else float("nan")


def _train_epoch(
    model: nn.Module, opt, batches: Iterable[Batch], device: str, precision: str
) -> tuple[float, int, int]:
    """One pass of training; returns ``(summed loss, correct, images)``."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        x = normalize(x.to(device)).contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(x)
            loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return loss_sum, correct, seen


def fit(
    arch: str,
    seed: int,
    num_classes: int,
    input_size: int,
    train: Callable[[int], Iterable[Batch]],
    val: Callable[[], Iterable[Batch]],
    test: Callable[[], Iterable[Batch]] | None = None,
    settings: TrainSettings = PAPER_SETTINGS,
    init_weights: str | None = None,
    device: str = "cpu",
    on_epoch: Callable[[dict, CityNet], None] | None = None,
    storage_options: dict | None = None,
    on_state: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    precision: str = "fp32",
) -> TrainResult:
    """Train one (architecture, seed) and keep its best-validation state.

    Args:
        arch: Registry name.
        seed: Seeds weight initialisation (and, through ``train``, the shuffling).
        num_classes: Number of cities.
        input_size: Square input side.
        train: ``train(epoch)`` yields the epoch's batches (uint8 images, labels).
        val: ``val()`` yields validation batches.
        test: ``test()`` yields test batches, or None.
        settings: Optimiser and schedule.
        init_weights: Optional torchvision-format starting weights (path/URI).
        device: Torch device.
        on_epoch: Called after each epoch with its history row and the model.
        storage_options: fsspec options for an ``s3://`` ``init_weights``.
        on_state: Called after each epoch with the whole training state (``epoch,
            model, optimizer, scheduler, best, best_acc, best_epoch, history, rng,
            cuda_rng``: tensors, numbers and lists only, so ``torch.load(...,
            weights_only=True)`` reads it back) — what a crash-safe checkpoint holds.
        resume: A state given to ``on_state`` earlier: training continues after its
            epoch, with its weights, optimiser moments, schedule, best state and random
            generator, so an interrupted run ends exactly as an uninterrupted one.
        precision: ``fp32`` (the paper's) or ``bf16``: the forward pass and the loss
            under bfloat16 autocast (validation and test too); weights, gradients and
            the optimiser's state stay float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, input_size, init_weights, storage_options)
    # channels-last convolutions run 10-40 % faster on CPU (oneDNN) and on GPU.
    model = model.to(device=device, memory_format=torch.channels_last)
    # The fused Adam kernel updates VGG11's 129M parameters 15x faster than the
    # default for-each implementation on CPU (0.08 s vs 1.25 s a step, 2 cores).
    opt = torch.optim.Adam(
        model.parameters(), lr=settings.lr, betas=settings.betas, eps=settings.eps, fused=True
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, settings.lr_step, settings.lr_gamma)
    result = TrainResult(model=model)
    best_state, best_acc, first = None, -1.0, 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        best = resume["best"] if resume["best"] is not None else resume["model"]
        best_state = copy.deepcopy(best)
        best_acc, result.best_epoch = float(resume["best_acc"]), int(resume["best_epoch"])
        result.history = [dict(row) for row in resume["history"]]
        torch.set_rng_state(resume["rng"])
        if resume.get("cuda_rng") is not None and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(resume["cuda_rng"], torch.device(device))
        first = int(resume["epoch"]) + 1
    for epoch in range(first, settings.epochs + 1):
        lr = opt.param_groups[0]["lr"]
        loss_sum, correct, seen = _train_epoch(model, opt, train(epoch), device, precision)
        sched.step()
        val_acc = accuracy(model, val(), device, precision)
        row = {
            "epoch": epoch,
            "lr": lr,
            "loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_acc": val_acc,
        }
        result.history.append(row)
        if val_acc > best_acc:
            best_acc, result.best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(row, model)
        if on_state is not None:
            on_state(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    # the best state is stored once: None when it is this epoch's
                    "best": None if result.best_epoch == epoch else best_state,
                    "best_acc": best_acc,
                    "best_epoch": result.best_epoch,
                    "history": [dict(r) for r in result.history],
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(torch.device(device))
                    if torch.device(device).type == "cuda"
                    else None,
                }
            )
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.val_acc = best_acc
    result.test_acc = accuracy(model, test(), device, precision) if test is not None else None
    return result


def save_checkpoint(
    uri: str, model: CityNet, meta: dict, storage_options: dict | None = None
) -> None:
    """Write ``<uri>/model.pt`` (state_dict) and ``<uri>/meta.json``."""
    fs, root = filesystem(uri, storage_options)
    if "file" in fs.protocol:  # no folders (nor bucket creation) on object stores
        fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/model.pt", "wb") as f:
        torch.save(model.state_dict(), f)
    meta = {
        "arch": model.arch,
        "input_size": model.input_size,
        "num_classes": model.num_classes,
        "target_layer": model.target_layer,  # the paper's layer
        "cam_size": list(model.cam_size),
        # every layer an explanation may be taken at (explain.layer), with its map size
        "layers": {name: list(size) for name, size in model.map_sizes().items()},
        **meta,
    }
    with fs.open(f"{root}/meta.json", "w") as f:
        json.dump(meta, f, indent=2, default=_json_default)


def _json_default(obj):
    if isinstance(obj, TrainSettings):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_checkpoint(
    uri: str, device: str = "cpu", storage_options: dict | None = None
) -> tuple[CityNet, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Returns:
        ``(model in eval mode, meta)``.
    """
    fs, root = filesystem(uri, storage_options)
    with fs.open(f"{root}/meta.json") as f:
        meta = json.load(f)
    model = build_model(meta["arch"], meta["num_classes"], meta["input_size"])
    state = load_state_dict(f"{uri.rstrip('/')}/model.pt", storage_options)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta
