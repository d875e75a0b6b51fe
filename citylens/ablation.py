"""Removing an object from an image, and what a model loses: the causal check's core.

R_p^c says which objects the explanations *cover*; these functions say which ones the
model *uses*. Pure functions over torch tensors, batched, forward passes only; the
pixels are replaced by one of :mod:`citylens.fills`.

- **Objects**: per image, the classes present with enough pixels, largest first.
- **Controls**: the same number of pixels removed where the object is not (its mask
  translated to a free place, else a random blob of equal area), so a drop reads
  against what removing *any* that much of the image costs.
- **Deletion / insertion curves** (Petsiuk et al. 2018): pixels removed (or restored
  into a filled image) in the order of an explanation's mask_norm, most important
  first, against the same numbers of pixels in random order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from citylens.fills import DEFAULT_FILL, fill

__all__ = [
    "STEPS",
    "CURVES",
    "ORDERS",
    "ablate_objects",
    "ablation_rows",
    "control_masks",
    "curve_area",
    "deletion_curves",
    "objects_to_remove",
    "target_scores",
]

STEPS = (0.0, 0.05, 0.1, 0.2, 0.4)  # fractions of the image removed along a curve
CURVES = ("deletion", "insertion", "deletion_logit", "insertion_logit")
ORDERS = ("mask", "random")  # a curve's order: the explanation's mask_norm, or random


def _blob(free: np.ndarray, area: int, rng: np.random.Generator) -> np.ndarray | None:
    """A 4-connected blob of ``area`` free pixels grown from a random free seed."""
    h, w = free.shape
    seeds = np.flatnonzero(free)
    if len(seeds) < area:
        return None
    out = np.zeros_like(free)
    start = int(rng.choice(seeds))
    frontier, taken = [start], 0
    seen = {start}
    while frontier and taken < area:
        i = frontier.pop(int(rng.integers(len(frontier))))
        out.flat[i] = True
        taken += 1
        y, x = divmod(i, w)
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            j = ny * w + nx
            if 0 <= ny < h and 0 <= nx < w and free[ny, nx] and j not in seen:
                seen.add(j)
                frontier.append(j)
    return out if taken == area else None


def control_masks(
    masks: torch.Tensor | np.ndarray, seed: int | list[int] = 0, tries: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each object mask, a mask of equal area where the object is not.

    The object's mask translated by a random whole-pixel offset that keeps it inside
    the image and off the object, or, when no such offset is found in ``tries`` draws,
    a random 4-connected blob of equal area outside the object (an object that is most
    of the image has none: its control is empty and flagged).

    Args:
        masks: ``(B, H, W)`` bool object masks.
        seed: Seed of the draws: one for the batch (row ``i`` draws from ``[seed, i]``)
            or one per row, so a row's control does not depend on its batch.
        tries: Translations tried before growing a blob.

    Returns:
        ``(controls (B, H, W) bool, ok (B,) bool)``; where ``ok``, the control has the
        object's area and shares no pixel with it.
    """
    m = np.asarray(torch.as_tensor(masks, dtype=torch.bool).cpu())
    b, h, w = m.shape
    seeds = [[seed, i] for i in range(b)] if isinstance(seed, int) else list(seed)
    out = np.zeros_like(m)
    ok = np.zeros(b, bool)
    for i in range(b):
        rng = np.random.default_rng(seeds[i])
        ys, xs = np.nonzero(m[i])
        area = len(ys)
        if area == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        for _ in range(tries):
            dy = int(rng.integers(-y0, h - y1))
            dx = int(rng.integers(-x0, w - x1))
            if dy == 0 and dx == 0:
                continue
            if not m[i, ys + dy, xs + dx].any():
                out[i, ys + dy, xs + dx] = True
                ok[i] = True
                break
        else:
            blob = _blob(~m[i], area, rng)
            if blob is not None:
                out[i], ok[i] = blob, True
    return torch.from_numpy(out), torch.from_numpy(ok)


@torch.no_grad()
def target_scores(
    model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax probability and the logit of each image's target class.

    Args:
        model: A classifier in eval mode.
        x: ``(B, 3, S, S)`` inputs as the model takes them.
        targets: ``(B,)`` class indices.

    Returns:
        ``(prob (B,), logit (B,))`` float32.
    """
    logits = model(x).float()
    t = targets.to(logits.device).long()[:, None]
    return logits.softmax(1).gather(1, t)[:, 0], logits.gather(1, t)[:, 0]


def _ranked(saliency: torch.Tensor, random: bool, seed: int | list[int]) -> torch.Tensor:
    """``(B, H·W)`` pixel indices, most important first (ties by index), or shuffled.

    A shuffle draws from one generator per image: seeded ``seed[i]`` when ``seed`` is a
    list (so an image's order does not depend on its batch), else from one stream.
    """
    b, n = saliency.shape[0], saliency[0].numel()
    if random:
        if isinstance(seed, (list, tuple)):
            gens = [torch.Generator().manual_seed(int(s) & 0xFFFFFFFFFFFF) for s in seed]
        else:
            gens = [torch.Generator().manual_seed(seed)] * b
        return torch.stack([torch.randperm(n, generator=g) for g in gens])
    flat = saliency.reshape(b, n).to(torch.float64)
    # stable descending sort: equal saliency keeps pixel order
    return torch.sort(-flat, dim=1, stable=True).indices


def deletion_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    saliency: torch.Tensor,
    prepare,
    how: str = DEFAULT_FILL,
    steps: tuple[float, ...] = STEPS,
    random: bool = False,
    seed: int | list[int] = 0,
) -> dict[str, torch.Tensor]:
    """Target probability as pixels are removed (deletion) or restored (insertion).

    Deletion removes the top fraction ``f`` of pixels by ``saliency`` (``random``: a
    random order, seeded) and fills them; insertion starts from the whole image filled
    and restores the same pixels.

    Args:
        model: The classifier (eval mode).
        images: ``(B, 3, S, S)`` uint8 images.
        targets: ``(B,)`` target classes.
        saliency: ``(B, S, S)`` importance per pixel (mask_norm on the image's grid).
        prepare: ``uint8 images -> model inputs`` (normalisation, device, layout).
        how: The fill (:data:`FILLS`).
        steps: Fractions of the image removed, ascending, starting at 0.
        random: Remove in a random order instead of by saliency.
        seed: Seed of the random order: one per image (its order then does not depend
            on the batch), or one for the batch.

    Returns:
        ``{"deletion", "insertion"}``: ``(B, len(steps))`` float32 probabilities of the
        target class; ``{"deletion_logit", "insertion_logit"}``: its logits.
    """
    b, _, h, w = images.shape
    dev = images.device  # the fills run where the images are (a GPU's, in a GPU actor)
    order = _ranked(saliency.cpu(), random, seed).to(dev)
    filled = fill(images, torch.ones(b, h, w, dtype=torch.bool, device=dev), how)
    out: dict[str, list] = {k: [] for k in CURVES}
    for f in steps:
        k = int(round(f * h * w))
        removed = torch.zeros(b, h * w, dtype=torch.bool, device=dev)
        if k:
            removed.scatter_(1, order[:, :k], True)
        removed = removed.view(b, h, w)
        deleted = fill(images, removed, how) if k else images
        inserted = torch.where(removed[:, None], images, filled)
        for name, x in (("deletion", deleted), ("insertion", inserted)):
            p, z = target_scores(model, prepare(x), targets)
            out[name].append(p.cpu())
            out[f"{name}_logit"].append(z.cpu())
    return {name: torch.stack(v, 1) for name, v in out.items()}


def curve_area(steps: tuple[float, ...], values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Area under curves over the removed fraction, by the trapezoid rule.

    Args:
        steps: The fractions (ascending).
        values: ``(..., len(steps))``.

    Returns:
        ``(...)`` float64 areas, normalised by the span of ``steps`` (a flat curve at
        ``p`` has area ``p``).
    """
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    span = s[-1] - s[0]
    if span <= 0 or not math.isfinite(span):
        raise ValueError("steps must be ascending and span more than one value")
    return np.trapezoid(v, s, axis=-1) / span


def objects_to_remove(
    labels: torch.Tensor, min_pixels: int, max_objects: int, classes: set[int] | None = None
) -> list[list[tuple[int, int]]]:
    """Which objects of each image are removed: ``(class, pixels)``, largest first.

    Args:
        labels: ``(B, S, S)`` class maps at the model's input resolution.
        min_pixels: An object needs at least this many pixels (at that resolution).
        max_objects: At most this many per image (the largest; ties by class index).
        classes: Only these classes (None: every class but ``other``, 0).

    Returns:
        Per image, ``(class, pixels)`` pairs.
    """
    out = []
    for lab in labels:
        counts = torch.bincount(lab.reshape(-1).long())
        present = [
            (int(c), int(n))
            for c, n in enumerate(counts.tolist())
            if c != 0 and n >= min_pixels and (classes is None or c in classes)
        ]
        present.sort(key=lambda cn: (-cn[1], cn[0]))
        out.append(present[:max_objects])
    return out


def ablate_objects(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    prepare,
    objects: list[list[tuple[int, int]]],
    seeds: list[int],
    how: str = DEFAULT_FILL,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Remove each chosen object (and, as its control, as many pixels elsewhere).

    Args:
        model: The classifier (eval mode).
        images: ``(B, 3, S, S)`` uint8 images.
        labels: ``(B, S, S)`` class maps at the same resolution.
        targets: ``(B,)`` target classes (the images' cities).
        prepare: ``uint8 images -> model inputs`` (normalisation, device, layout).
        objects: Per image, the ``(class, pixels)`` to remove (:func:`objects_to_remove`).
        seeds: Per image, the seed of its controls (e.g. from its image id), so a row
            does not depend on which batch it was in.
        how: The fill (:data:`FILLS`).
        batch_size: Images per forward pass.

    Returns:
        Columns, one row per (image, object): ``image`` (index into the batch),
        ``class``, ``pixels``, ``prob``/``logit`` of the target on the whole image,
        ``prob_removed``/``logit_removed`` without the object, ``prob_control``/
        ``logit_control`` without the control, ``control_ok`` (False: no control fits;
        its scores are NaN); and, one per image, ``image_prob``/``image_logit`` (B,).
    """
    idx = [i for i, objs in enumerate(objects) for _ in objs]
    cls = [c for objs in objects for c, _ in objs]
    cols = {"image": np.asarray(idx, np.int64), "class": np.asarray(cls, np.int64)}
    cols["pixels"] = np.asarray([n for objs in objects for _, n in objs], np.int64)
    prob, logit = _scores(model, images, targets, prepare, batch_size)
    cols["image_prob"], cols["image_logit"] = prob, logit
    cols["prob"], cols["logit"] = prob[idx], logit[idx]
    if not idx:
        for k in ("removed", "control"):
            cols[f"prob_{k}"] = cols[f"logit_{k}"] = np.zeros(0, np.float32)
        cols["control_ok"] = np.zeros(0, bool)
        return cols
    sel = torch.as_tensor(idx, device=images.device)
    masks = (
        labels[sel] == torch.as_tensor(cls, dtype=labels.dtype, device=labels.device)[:, None, None]
    )
    pair_seeds = [[int(seeds[i]), c] for i, c in zip(idx, cls)]
    controls, ok = control_masks(masks, pair_seeds)  # placed on the CPU
    controls = controls.to(images.device)
    for name, m in (("removed", masks), ("control", controls)):
        p, z = _scores(model, fill(images[sel], m, how), targets[sel], prepare, batch_size)
        cols[f"prob_{name}"], cols[f"logit_{name}"] = p, z
    ok = ok.numpy()
    cols["prob_control"][~ok] = np.nan
    cols["logit_control"][~ok] = np.nan
    cols["control_ok"] = ok
    return cols


def _scores(model, images, targets, prepare, batch_size) -> tuple[np.ndarray, np.ndarray]:
    probs, logits = [], []
    for i in range(0, len(images), batch_size):
        p, z = target_scores(
            model, prepare(images[i : i + batch_size]), targets[i : i + batch_size]
        )
        probs.append(p.cpu())
        logits.append(z.cpu())
    if not probs:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return torch.cat(probs).numpy(), torch.cat(logits).numpy()


def ablation_rows(
    image_ids: list[str],
    cities: list[str],
    model: str,
    targets: np.ndarray,
    removal: dict[str, np.ndarray],
    curves: dict[str, dict[str, torch.Tensor]],
    steps: tuple[float, ...],
    how: str,
    size: int,
) -> dict[str, list]:
    """One model's ablations of a batch as long-form rows (:data:`~citylens.tables.ABLATIONS`).

    Per image: a row per removed object (``kind="object"``, ``class`` = ``of_class`` =
    the object) and one for its control (``kind="control"``, ``class`` −1, ``of_class``
    the object it stands for; NaN scores and 0 pixels where no control fit), then a row
    per curve step (``kind`` deletion / insertion, ``order`` mask / random, ``class``
    and ``of_class`` −1).

    Args:
        image_ids: The batch's image ids.
        cities: Their cities.
        model: The model's name.
        targets: ``(B,)`` target classes.
        removal: :func:`ablate_objects` of the batch.
        curves: order -> :func:`deletion_curves` of the batch in that order (an order
            left out adds no rows): :data:`ORDERS` and, for the explanations
            ``explain.methods`` adds, their labels (written after, in ``curves``' order).
        steps: The curves' steps.
        how: The fill.
        size: The models' input side (``step`` of an object row is its share of it).

    Returns:
        Columns of ABLATIONS as lists.
    """
    cols: dict[str, list] = {k: [] for k in _ROW_COLUMNS}
    area = float(size * size)

    def add(j, kind, order, cls, of, step, pixels, prob, logit):
        for k, v in zip(
            _ROW_COLUMNS,
            (image_ids[j], cities[j], model, int(targets[j]), kind, order, cls, of, step),
        ):
            cols[k].append(v)
        cols["fill"].append(how)
        cols["pixels"].append(int(pixels))
        cols["prob_before"].append(float(removal["image_prob"][j]))
        cols["logit_before"].append(float(removal["image_logit"][j]))
        cols["prob_after"].append(float(prob))
        cols["logit_after"].append(float(logit))

    at = {j: np.flatnonzero(removal["image"] == j) for j in range(len(image_ids))}
    for j in range(len(image_ids)):
        for r in at[j]:
            cls, n, ok = (
                int(removal["class"][r]),
                int(removal["pixels"][r]),
                removal["control_ok"][r],
            )
            add(
                j,
                "object",
                None,
                cls,
                cls,
                n / area,
                n,
                removal["prob_removed"][r],
                removal["logit_removed"][r],
            )
            add(
                j,
                "control",
                None,
                -1,
                cls,
                n / area if ok else 0.0,
                n if ok else 0,
                removal["prob_control"][r],
                removal["logit_control"][r],
            )
        for order in [*(o for o in ORDERS if o in curves), *(o for o in curves if o not in ORDERS)]:
            c = curves[order]
            for kind in ("deletion", "insertion"):
                for i, f in enumerate(steps):
                    add(
                        j,
                        kind,
                        order,
                        -1,
                        -1,
                        float(f),
                        round(f * area),
                        c[kind][j, i],
                        c[f"{kind}_logit"][j, i],
                    )
    return cols


_ROW_COLUMNS = (
    "image_id",
    "city",
    "model",
    "target",
    "kind",
    "order",
    "class",
    "of_class",
    "step",
    "fill",
    "pixels",
    "prob_before",
    "logit_before",
    "prob_after",
    "logit_after",
)
