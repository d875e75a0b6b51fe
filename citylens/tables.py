"""Arrow schemas of every table a study writes (ARCHITECTURE.md says which stage writes which).

Stages' outputs first (manifest, explanations, segments, overlaps, errors), then the
analyze stage's tables, then the partial tables that pass between a stage's tasks.

All tables are Parquet files with these explicit schemas; ``image_id`` is a content
hash of the image bytes, so rows are keyed by what the image *is*, not where it lies.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "ABLATIONS",
    "ACCURACY",
    "AGREEMENT",
    "ANNOTATED",
    "ANNOTATORS",
    "AR_IMAGES",
    "AR_KINDS",
    "AR_PAIRS",
    "BASELINES",
    "BASELINE_FEATURES",
    "CAUSAL",
    "CAUSAL_EXAMPLES",
    "CURVES",
    "DISTINCTIVE",
    "EMBEDDINGS",
    "ERRORS",
    "EXPLANATIONS",
    "FAITHFULNESS",
    "MANIFEST",
    "METHOD_EXPLANATIONS",
    "METHOD_FAITHFULNESS",
    "METHOD_OBJECTS",
    "METHOD_OVERLAPS",
    "METHOD_PAIRS",
    "METHOD_RANKINGS",
    "OBJECTS",
    "OBJECT_MEANS",
    "OVERLAPS",
    "PLACES",
    "PROBES",
    "SEGMENTS",
    "SPLITS",
    "TOPS",
    "TOP_OBJECTS",
    "TOP_SETTLED",
    "error_row",
    "errors_table",
    "method_label",
    "model_name",
]

SPLITS = ("train", "val", "test")

MANIFEST = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("place", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("label_uri", pa.string(), nullable=True),
        pa.field("lat", pa.float64(), nullable=True),  # WGS84 degrees; null: not known
        pa.field("lon", pa.float64(), nullable=True),
    ]
)

EXPLANATIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # "<arch>-s<seed>"
        pa.field("arch", pa.string(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("target", pa.int16(), nullable=False),
        pa.field("pred", pa.int16(), nullable=False),
        pa.field("prob", pa.list_(pa.float32()), nullable=False),
        pa.field("cam_h", pa.int16(), nullable=False),
        pa.field("cam_w", pa.int16(), nullable=False),
        pa.field("mask", pa.list_(pa.float32()), nullable=False),  # mask_norm, row-major
        pa.field("empty", pa.bool_(), nullable=False),
        pa.field("d_cam", pa.list_(pa.float32()), nullable=False),
        pa.field("d_short", pa.list_(pa.float32()), nullable=False),
    ]
)

# Explanations that ``explain.methods`` adds beside the study's own (the explain stage's
# ``methods/`` shards, one per data shard, named as it): one row per image, model and
# (method, layer). ``order`` names the explanation in the ablations table's curves.
METHOD_EXPLANATIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("target", pa.int16(), nullable=False),
        pa.field("cam_h", pa.int16(), nullable=False),
        pa.field("cam_w", pa.int16(), nullable=False),
        pa.field("mask", pa.list_(pa.float32()), nullable=False),  # mask_norm, row-major
        pa.field("empty", pa.bool_(), nullable=False),
    ]
)

SEGMENTS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("segmenter", pa.string(), nullable=False),
        pa.field("seg_h", pa.int32(), nullable=False),
        pa.field("seg_w", pa.int32(), nullable=False),
        pa.field("labels", pa.binary(), nullable=False),  # PNG-encoded class map
        pa.field("class_pixels", pa.list_(pa.int64()), nullable=False),
    ]
)

OVERLAPS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("theta", pa.float32(), nullable=False),
        pa.field("mask_pixels", pa.int64(), nullable=False),
        pa.field("class_pixels_in_mask", pa.list_(pa.int64()), nullable=False),
        pa.field("class_pixels", pa.list_(pa.int64()), nullable=False),
    ]
)

# The overlaps of the explanations ``explain.methods`` adds (overlap's ``methods/``).
METHOD_OVERLAPS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("theta", pa.float32(), nullable=False),
        pa.field("mask_pixels", pa.int64(), nullable=False),
        pa.field("class_pixels_in_mask", pa.list_(pa.int64()), nullable=False),
        pa.field("class_pixels", pa.list_(pa.int64()), nullable=False),
    ]
)

# One row per (image, model, removal): what removing pixels costs the model. ``kind``:
# ``object`` (one object's pixels; ``class`` = ``of_class`` = the object), ``control``
# (as many pixels where the object is not; ``class`` -1, ``of_class`` the object it
# stands for; NaN scores and 0 pixels where none fit), ``deletion`` / ``insertion``
# (a curve's step, in ``order`` mask — the explanation's mask_norm — or random; class
# and of_class -1). ``step``: the share of the image's pixels removed (or restored).
ABLATIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("target", pa.int16(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("order", pa.string(), nullable=True),  # curves only
        pa.field("class", pa.int32(), nullable=False),
        pa.field("of_class", pa.int32(), nullable=False),
        pa.field("step", pa.float32(), nullable=False),
        pa.field("fill", pa.string(), nullable=False),
        pa.field("pixels", pa.int64(), nullable=False),  # at the models' input size
        pa.field("prob_before", pa.float32(), nullable=False),  # of the target, whole image
        pa.field("logit_before", pa.float32(), nullable=False),
        pa.field("prob_after", pa.float32(), nullable=False),  # the pixels removed
        pa.field("logit_after", pa.float32(), nullable=False),
    ]
)

ERRORS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=True),
        pa.field("uri", pa.string(), nullable=True),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
    ]
)


# Agreement of the segmenter's labels with a person's (analyze/agreement.parquet): one
# row per (annotator, model, city, θ, threshold); with several annotators also "all",
# every annotation pooled. ``n``: explanations both sides labelled; ``empty``: the
# segmenter labelled none of the explanation's pixels; ``unclear``: the person answered
# "none / unclear". Accuracies are over ``n``.
AGREEMENT = pa.schema(
    [
        ("annotator", pa.string()),
        ("model", pa.string()),
        ("city", pa.string()),  # a city, or "all"
        ("theta", pa.float32()),
        ("threshold", pa.float64()),
        ("n", pa.int64()),
        ("empty", pa.int64()),
        ("unclear", pa.int64()),
        ("strict", pa.float64()),
        ("lenient", pa.float64()),
    ]
)

# Each annotation matched to the explanation it labels (analyze/annotated.parquet): the
# person's one or two classes (-1: none; both -1: "none / unclear") beside the
# segmenter's top two inside that explanation (top1 -1: it labelled no pixel of it) and
# their share of its labelled pixels.
ANNOTATED = pa.schema(
    [
        ("annotator", pa.string()),
        ("image_id", pa.string()),
        ("city", pa.string()),
        ("model", pa.string()),
        ("theta", pa.float32()),
        ("label1", pa.int32()),
        ("label2", pa.int32()),
        ("seconds", pa.float64()),  # seconds the person spent on it (null: not recorded)
        ("top1", pa.int32()),
        ("top2", pa.int32()),
        ("ratio", pa.float64()),
    ]
)

# Agreement between two annotators on the explanations both labelled
# (analyze/annotators.parquet): Cohen's κ of their first (main) label, "none / unclear"
# a category of its own, with a place-bootstrap interval; the observed share of equal
# first labels, of equal label sets and of sets sharing a label.
ANNOTATORS = pa.schema(
    [
        ("annotator_a", pa.string()),
        ("annotator_b", pa.string()),
        ("n", pa.int64()),
        ("places", pa.int64()),
        ("observed", pa.float64()),
        ("kappa", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("same_labels", pa.float64()),
        ("any_label", pa.float64()),
    ]
)

# --------------------------------------------------------------------------- analyze

# Per image and model pair: the average residual between the two models' mask_norm.
AR_IMAGES = pa.schema(
    [
        ("image_id", pa.string()),
        ("city", pa.string()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("ar", pa.float64()),
    ]
)

# Per model pair: mean AR over the images both explained (paper Table 2).
AR_PAIRS = pa.schema(
    [
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("arch_a", pa.string()),
        ("arch_b", pa.string()),
        ("kind", pa.string()),  # "seeds" (one architecture) or "architectures"
        ("mean_ar", pa.float64()),
        ("std_ar", pa.float64()),
        ("images", pa.int64()),
        ("ci_low", pa.float64()),  # place-bootstrap percentile interval of mean_ar
        ("ci_high", pa.float64()),
        ("n_places", pa.int64()),
    ]
)

# Per (model, city, θ, object present in the city): R_p and its two means.
OBJECTS = pa.schema(
    [
        ("model", pa.string()),
        ("arch", pa.string()),
        ("seed", pa.int64()),
        ("city", pa.string()),
        ("theta", pa.float64()),
        ("class", pa.int64()),
        ("name", pa.string()),
        ("r_p", pa.float64()),
        ("mean_in_mask", pa.float64()),
        ("mean_in_image", pa.float64()),
        ("selected", pa.bool_()),
        ("images", pa.int64()),
        ("ci_low", pa.float64()),  # place-bootstrap percentile interval of r_p
        ("ci_high", pa.float64()),
        ("n_places", pa.int64()),  # the city's test places (the resampled units)
    ]
)

# Mean AR of architecture pairs and of seed pairs, and the paired difference (the
# paper's Table 2 claim), each with a place-bootstrap interval.
AR_KINDS = pa.schema(
    [
        ("kind", pa.string()),  # "architectures", "seeds" or "architectures - seeds"
        ("pairs", pa.int64()),
        ("mean_ar", pa.float64()),  # mean over pairs of mean AR (the difference's row: diff)
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),  # the difference's row only: two-sided, diff = 0
        ("n_places", pa.int64()),
    ]
)

# R_p^c averaged over the models of a scope ("models": all; an architecture: its seeds).
OBJECT_MEANS = pa.schema(
    [
        ("scope", pa.string()),
        ("city", pa.string()),
        ("theta", pa.float64()),
        ("class", pa.int64()),
        ("name", pa.string()),
        ("models", pa.int64()),
        ("r_p", pa.float64()),  # mean over the scope's models
        ("sd", pa.float64()),  # spread across them (NaN for one model)
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("mean_in_mask", pa.float64()),  # averaged over the models
        ("selected", pa.bool_()),
        ("n_places", pa.int64()),
    ]
)

# Is an object's R_p^c (averaged over models) above every other city's? One row per
# tested (city, θ, object); Benjamini–Hochberg over all rows.
DISTINCTIVE = pa.schema(
    [
        ("city", pa.string()),
        ("theta", pa.float64()),
        ("class", pa.int64()),
        ("name", pa.string()),
        ("r_p", pa.float64()),
        ("against", pa.string()),  # the other city with the highest R_p; null: none has it
        ("baseline", pa.float64()),  # its R_p (or the city's explained share of pixels)
        ("only_here", pa.bool_()),
        ("diff", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("q_value", pa.float64()),
        ("passes", pa.bool_()),  # diff > 0 and q_value ≤ 0.05
    ]
)

# Per (model, city, θ): the top object by R_p, the runner-up, and whether the ranking
# is settled (the interval of their paired difference excludes 0).
TOP_SETTLED = pa.schema(
    [
        ("model", pa.string()),
        ("city", pa.string()),
        ("theta", pa.float64()),
        ("top_class", pa.int64()),
        ("top_name", pa.string()),
        ("top_r_p", pa.float64()),
        ("second_class", pa.int64()),
        ("second_name", pa.string()),
        ("second_r_p", pa.float64()),
        ("diff_low", pa.float64()),
        ("diff_high", pa.float64()),
        ("settled", pa.bool_()),
    ]
)

# The leakage audit: trivial classifiers' test accuracy (the baseline stage).
BASELINES = pa.schema(
    [
        ("baseline", pa.string()),  # majority city | mean colour | colour histogram | ...
        ("features", pa.int64()),
        ("accuracy", pa.float64()),
        ("ci_low", pa.float64()),  # place-bootstrap percentile interval
        ("ci_high", pa.float64()),
        ("chance", pa.float64()),  # the largest city's share of the test split
        ("n_test", pa.int64()),
        ("n_places", pa.int64()),
        ("detail", pa.string()),
    ]
)

# Image features of the baseline stage (one row per decoded train or test image).
BASELINE_FEATURES = pa.schema(
    [
        ("image_id", pa.string()),
        ("city", pa.string()),
        ("features", pa.list_(pa.float32())),  # mean RGB then the colour histogram
        ("error_kind", pa.string()),
        ("error_message", pa.string()),
    ]
)

# Per (model, located test place) at the report's θ: what the explanations there cover,
# whether the model was right, and the place's share of its city's key object's R_p.
PLACES = pa.schema(
    [
        ("model", pa.string()),
        ("city", pa.string()),
        ("place", pa.string()),
        ("lat", pa.float64()),  # the centre of the place's located images (WGS84)
        ("lon", pa.float64()),
        ("images", pa.int64()),  # its test images with overlaps at θ
        ("explained", pa.int64()),  # its test images the model classified
        ("correct", pa.int64()),  # ... correctly
        ("top_class", pa.int64()),  # most pixels inside its explanations (-1: none)
        ("top_name", pa.string()),
        ("top_share", pa.float64()),  # that class's share of the objects' pixels there
        ("key_class", pa.int64()),  # the city's most discriminative object
        ("key_name", pa.string()),
        ("key_r_p", pa.float64()),  # Σ_place M_key / Σ_city N_key: sums to R_key^c
    ]
)

# Per (model, city, θ): the objects covering most of the explanations, rank 1 first.
TOP_OBJECTS = pa.schema(
    [
        ("model", pa.string()),
        ("city", pa.string()),
        ("theta", pa.float64()),
        ("rank", pa.int64()),
        ("class", pa.int64()),
        ("name", pa.string()),
        ("mean_in_mask", pa.float64()),
    ]
)

# Per (model, city, object): what removing it costs the model, against its control.
CAUSAL = pa.schema(
    [
        ("model", pa.string()),
        ("arch", pa.string()),
        ("seed", pa.int64()),
        ("city", pa.string()),
        ("class", pa.int64()),
        ("name", pa.string()),
        ("images", pa.int64()),  # images of the city with the object
        ("places", pa.int64()),  # their places (the bootstrap's units)
        ("controls", pa.int64()),  # images where a control fit
        ("pixels", pa.float64()),  # mean pixels removed (at the models' input size)
        ("drop", pa.float64()),  # mean drop of the target probability, object removed
        ("control_drop", pa.float64()),  # the same, control removed
        ("effect", pa.float64()),  # mean of drop − control drop
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),  # two-sided, effect = 0
    ]
)

# The report's before/after pictures: an image, the object removed, what the model said.
CAUSAL_EXAMPLES = pa.schema(
    [
        ("image_id", pa.string()),
        ("city", pa.string()),
        ("model", pa.string()),
        ("class", pa.int64()),
        ("prob", pa.float64()),  # of the true city, whole image
        ("prob_removed", pa.float64()),  # the object removed
        ("prob_control", pa.float64()),  # as many pixels removed elsewhere (NaN: none fit)
    ]
)

# Per (model, city): deletion / insertion areas, the explanation's order against random.
FAITHFULNESS = pa.schema(
    [
        ("model", pa.string()),
        ("city", pa.string()),
        ("images", pa.int64()),
        ("places", pa.int64()),
        ("deletion", pa.float64()),
        ("deletion_random", pa.float64()),
        ("insertion", pa.float64()),
        ("insertion_random", pa.float64()),
        ("deletion_gain", pa.float64()),  # random − explanation: > 0 is faithful
        ("deletion_gain_low", pa.float64()),
        ("deletion_gain_high", pa.float64()),
        ("insertion_gain", pa.float64()),  # explanation − random: > 0 is faithful
        ("insertion_gain_low", pa.float64()),
        ("insertion_gain_high", pa.float64()),
    ]
)

# Per (model, city, curve, order, step): the mean target probability along the
# deletion / insertion curves (the report's curves figure).
CURVES = pa.schema(
    [
        ("model", pa.string()),
        ("city", pa.string()),
        ("kind", pa.string()),  # deletion | insertion
        ("order", pa.string()),  # mask | random
        ("step", pa.float64()),  # share of the image removed (restored)
        ("prob", pa.float64()),  # mean target probability over the city's images
        ("images", pa.int64()),
    ]
)

# Methods compared (``explain.methods``). Per model and pair of its explanations
# (method at layer): their mean AR over the test images, with a place-bootstrap interval.
METHOD_PAIRS = pa.schema(
    [
        ("model", pa.string()),
        ("arch", pa.string()),
        ("method_a", pa.string()),
        ("layer_a", pa.string()),
        ("method_b", pa.string()),
        ("layer_b", pa.string()),
        ("mean_ar", pa.float64()),
        ("std_ar", pa.float64()),
        ("images", pa.int64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n_places", pa.int64()),
    ]
)

# R_p per (model, method, layer, city, θ, object): OBJECTS with the explanation named.
METHOD_OBJECTS = pa.schema(
    [
        *(OBJECTS.field(i) for i in range(3)),
        ("method", pa.string()),
        ("layer", pa.string()),
        *(OBJECTS.field(i) for i in range(3, len(OBJECTS))),
    ]
)

# Per (architecture, method, layer): the deletion / insertion gains over all of its
# models' test images (explanation against random order; > 0 is faithful), each with a
# place-bootstrap interval, and the paired difference to the architecture's most
# faithful explanation by deletion gain (``best``; ``separated``: that difference's
# interval, at Bonferroni's coverage over the architecture's other explanations,
# excludes 0, so the ranking of the two is settled on this data). ``images``: distinct
# test images (each explained by every model of the architecture).
METHOD_FAITHFULNESS = pa.schema(
    [
        ("arch", pa.string()),
        ("method", pa.string()),
        ("layer", pa.string()),
        ("own", pa.bool_()),  # the study's own explanation (explain.method at its layer)
        ("models", pa.int64()),
        ("images", pa.int64()),
        ("places", pa.int64()),
        ("deletion_gain", pa.float64()),
        ("deletion_gain_low", pa.float64()),
        ("deletion_gain_high", pa.float64()),
        ("insertion_gain", pa.float64()),
        ("insertion_gain_low", pa.float64()),
        ("insertion_gain_high", pa.float64()),
        ("best", pa.bool_()),
        ("behind_best", pa.float64()),  # best's deletion gain − this one's (paired)
        ("behind_best_low", pa.float64()),
        ("behind_best_high", pa.float64()),
        ("separated", pa.bool_()),
    ]
)

# Per (model, method, layer, city): how well R_p's ranking of the city's objects agrees
# with the causal check's ranking by effect (Spearman's ρ over the objects both rank).
METHOD_RANKINGS = pa.schema(
    [
        ("model", pa.string()),
        ("arch", pa.string()),
        ("method", pa.string()),
        ("layer", pa.string()),
        ("city", pa.string()),
        ("theta", pa.float64()),
        ("objects", pa.int64()),
        ("spearman", pa.float64()),  # NaN with fewer than 3 objects or a constant ranking
        ("top_agrees", pa.bool_()),  # R_p's top object has the largest effect (null: < 2)
    ]
)

# Per model: accuracy on val and test (training) and on the explained images.
ACCURACY = pa.schema(
    [
        ("model", pa.string()),
        ("arch", pa.string()),
        ("seed", pa.int64()),
        ("val_acc", pa.float64()),
        ("test_acc", pa.float64()),
        ("explained_acc", pa.float64()),  # null unless explain.target is "true" (and ran)
        ("explained", pa.int64()),
        # accuracy on the explained test images (= test_acc when every one decoded),
        # its place-bootstrap interval and the places resampled
        ("acc", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n_places", pa.int64()),
    ]
)

# Per (model, epoch): its training curve, from the model's ``meta.json`` history.
TRAINING = pa.schema(
    [
        ("model", pa.string()),
        ("arch", pa.string()),
        ("seed", pa.int64()),
        ("epoch", pa.int64()),  # 1-based
        ("lr", pa.float64()),
        ("loss", pa.float64()),  # mean training loss over the epoch
        ("train_acc", pa.float64()),  # accuracy on the training batches, as they were fit
        ("val_acc", pa.float64()),
        ("best", pa.bool_()),  # the epoch whose weights were kept (best val_acc)
    ]
)

# Per (model, descriptor, PCA setting, image): its t-SNE position.
EMBEDDINGS = pa.schema(
    [
        ("model", pa.string()),
        ("descriptor", pa.string()),  # d_cam or d_short
        ("pca", pa.string()),  # "50%" (variance kept) or "10" (components)
        ("components", pa.int64()),
        ("image_id", pa.string()),
        ("city", pa.string()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("top_class", pa.int32()),  # the object covering most of it at the smallest θ
    ]
)

# --------------------------------------------------------------------------- partial

# What ingest's probe tasks return per listed file (an error, or its size).
PROBES = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("city", pa.string()),
        ("place", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("label_uri", pa.string()),
        ("error_kind", pa.string()),
        ("error_message", pa.string()),
    ]
)

# Per overlap row: the class covering most of its explanation (other excepted).
TOPS = pa.schema(
    [
        ("image_id", pa.string()),
        ("model", pa.string()),
        ("theta", pa.float32()),
        ("top_class", pa.int32()),
    ]
)


def method_label(method: str, layer: str) -> str:
    """An explanation's name among a model's, ``<method>@<layer>`` (``gradcam++@layer3``).

    The ablations table's ``order`` for its curves; built here only and never parsed
    back: the explain stage's record lists each model's (method, layer) pairs.
    """
    return f"{method}@{layer}"


def model_name(arch: str, seed: int) -> str:
    """A trained model's name in a study, ``<arch>-s<seed>`` (e.g. ``vgg11-s0``).

    Its folder under ``models/`` and its value in every table's ``model`` column. Built
    here only, and never parsed back: tables carry ``arch`` and ``seed`` beside it.
    """
    return f"{arch}-s{seed}"


def error_row(
    stage: str, kind: str, message: str, image_id: str | None = None, uri: str | None = None
) -> dict:
    """One row of an errors table (schema :data:`ERRORS`).

    Args:
        stage: The stage that could not use the input.
        kind: Short machine-readable reason (``unreadable``, ``too_large``, ...).
        message: What went wrong, naming the file where there is one.
        image_id: The image's content hash, when it was read.
        uri: The file, when there is one.
    """
    return {"image_id": image_id, "uri": uri, "stage": stage, "kind": kind, "message": message}


def errors_table(rows: list[dict]) -> pa.Table:
    """An errors table from dicts with the ERRORS fields (missing ids become null)."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in ERRORS}
    return pa.table(cols, schema=ERRORS)
