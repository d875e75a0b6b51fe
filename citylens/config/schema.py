"""The study config's schema: one frozen object per study, every field with a default.

The defaults are the paper's settings; with no ``cities`` the study runs on a synthetic
corpus generated into its store. Reading YAML into these objects is
:mod:`citylens.config.parse`; checking their values is :mod:`citylens.config.validate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AblateConfig",
    "AnalysisConfig",
    "CityConfig",
    "ConfigError",
    "ExplainConfig",
    "ModelsConfig",
    "RunConfig",
    "SegmenterConfig",
    "SplitConfig",
    "StudyConfig",
    "SyntheticConfig",
    "TrainConfig",
    "TrainSettings",
]


class ConfigError(ValueError):
    """An invalid study config; the message starts with the field's dotted path."""


@dataclass(frozen=True)
class CityConfig:
    """One city's images.

    Attributes:
        source: Folder, ``file://`` or ``s3://`` prefix holding the city's images.
        place_regex: Regex on file stems giving the place id (group ``place``).
        labels: Optional root of ground-truth label maps (same relative paths, .png).
        manifest: Optional file (path/URI) listing the city's images instead of every
            image under ``source``: one per line, or a CSV with an ``image`` column (and
            optionally ``place``). Entries are relative to ``source`` or lie under it;
            any other entry (``..``, another scheme, elsewhere) is refused and recorded.
        follow_links: Read symbolic links that lead outside ``source`` (a cache that
            links into a shared pool of files). Off by default: such links are refused
            and recorded (``outside_source``), like manifest entries outside the source.
    """

    source: str
    place_regex: str | None = None
    labels: str | None = None
    manifest: str | None = None
    follow_links: bool = False


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic corpus generated when a study names no cities."""

    cities: int = 2
    places: int = 40
    views: int = 4
    size: int = 128
    seed: int = 0
    null_city: bool = False  # add ``nullham``: shared classes only (citylens.data.synth)


@dataclass(frozen=True)
class SplitConfig:
    """The 6:2:2 split of places into train, val and test, seeded.

    Attributes:
        block_m: Draw the split over grid cells of this many metres, not over places,
            so spots a few metres apart straddle train and test only across a cell
            border (see :mod:`citylens.data.splits`; ingest reports how many test images
            still have a train image that near). Off (None) by default; a place without
            coordinates stays a unit of its own.
    """

    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    block_m: float | None = None


@dataclass(frozen=True)
class ModelsConfig:
    """Architectures × seeds (default: the paper's four, two seeds each).

    Attributes:
        init_weights: arch -> path/URI of torchvision-format starting weights.
        source: ``models.from`` in a study file: the store (a path or ``s3://`` URI) of
            another study whose trained ``<arch>-s<seed>`` models (those ``archs`` ×
            ``seeds`` name) this study uses instead of training its own. Their cities
            (names and class order) and input size must be this study's.
    """

    archs: tuple[str, ...] = ("vgg11", "resnet18", "simple", "simpler")
    seeds: tuple[int, ...] = (0, 1)
    init_weights: dict[str, str] = field(default_factory=dict)
    source: str | None = field(default=None, metadata={"key": "from"})


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser and schedule of one model's training (defaults: the paper's).

    What :func:`citylens.train.fit` takes and what a trained model's key digests.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_step: int = 10
    lr_gamma: float = 0.1


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """The paper's training setup: :class:`TrainSettings` plus study-wide fields.

    ``epochs_per_arch`` overrides ``epochs`` per arch.

    Attributes:
        checkpoint_every: Epochs between crash-safe checkpoints of the whole training
            state (weights, optimiser, schedule, best state, random generator) in the
            store; a re-run after a crash resumes from the last one. 0 turns them off.
            Does not change results.
        max_failures: Times a training run restarts its worker, inside the same run,
            after the worker or its node is lost (Ray Train's ``FailureConfig``); each
            restart resumes from the last checkpoint. Does not change results.
        retrain: When the study's images change. ``always``: every change of the
            manifest retrains every model. ``new_city``: only a change of the cities
            (their names or order: a new class) or of the split settings retrains;
            images added to known cities are explained with the models the study has.
            Ingest then keeps every known place's split (and every known image's), so
            no test image was trained on, and new places are dealt around them.
        precision: ``fp32`` (the paper's) or ``bf16``: forward and loss under bfloat16
            autocast, weights, gradients and Adam's moments kept in float32 (no loss
            scaling is needed at bf16's range). For GPUs (tensor cores); a CPU runs it
            too, slower than fp32 on most. Changes results: models trained in bf16 have
            keys of their own.
        data: How trials read the decoded images. ``store``: the driver decodes each
            split once into blocks in Ray's object store and every trial reads them
            from there every epoch. ``node_cache``: each node that trains decodes each
            split once into ``cache_dir`` on its own disk and its trials read it there;
            nothing crosses the network per epoch. ``auto`` (default): ``node_cache``
            on a cluster with GPUs (``run.gpus`` or its own) or several nodes, else
            ``store``. The same blocks in the same seeded order either way: the same
            models, bit for bit.
        cache_dir: Where ``node_cache`` keeps the decoded splits on each node
            (``S × S × 3`` bytes an image: ~150 KB at 224 px); caches unused for a
            week are removed as new ones are built.
    """

    epochs_per_arch: dict[str, int] = field(default_factory=dict)
    input_size: int = 224
    checkpoint_every: int = 1
    max_failures: int = 3
    retrain: str = "always"
    precision: str = "fp32"
    data: str = "auto"
    cache_dir: str = "/tmp/citylens-train-cache"

    def epochs_for(self, arch: str) -> int:
        """Epochs of ``arch``'s models."""
        return self.epochs_per_arch.get(arch, self.epochs)

    def settings_for(self, arch: str) -> TrainSettings:
        """The training settings of ``arch``'s models."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainSettings)}
        return TrainSettings(**(own | {"epochs": self.epochs_for(arch)}))


@dataclass(frozen=True)
class ExplainConfig:
    """Explanation settings: the CAM method, its layer, targets and thresholds.

    Attributes:
        method: The CAM method (:data:`citylens.cam.METHODS`): ``gradcam`` (the
            paper's), ``gradcam++``, ``hirescam``, ``layercam``, ``xgradcam``, or
            ``scorecam`` (no gradient, but one forward pass per channel of the layer:
            hundreds per image).
        layer: Where each model is explained: ``last`` (the paper's target layer) or
            ``previous`` (the named layer before it, whose map is about twice as fine:
            ResNet18 ``layer3``, VGG11 ``block4``, Simple ``conv3``, Simpler ``conv2``).
        layer_per_arch: A named layer per architecture, overriding ``layer`` (each
            checkpoint's ``meta.json`` lists its layers and their map sizes).
        target: ``"true"`` explains each image's true city, ``"pred"`` the prediction.
        thetas: Thresholds θ of the visual explanations.
        ar_grid: Side of the common AR grid (default: the model input size).
        batch_size: Images per Grad-CAM batch (a speed knob; does not change results).
            On a GPU use hundreds: small batches leave it waiting on kernel launches.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast of the models' trunks on a
            GPU (CPUs run fp32). Each model's first batch is explained both ways; a model
            whose masks differ from fp32's by ``mask_tolerance`` or more (mean absolute
            difference) stays in fp32 for the whole run.
        mask_tolerance: See ``precision``.
        methods: More explanations to compare with the study's own (``method`` at
            ``layer``), each ``"<method>"`` (at ``layer``) or ``"<method>@last"`` /
            ``"<method>@previous"``, e.g. ``["gradcam++", "gradcam@previous"]``. Each is
            made for every model (in fp32), counted against the class maps and, with the
            causal check, traced along deletion / insertion curves: the analysis compares
            them (AR between methods, R_p per method, faithfulness) and the report names
            the most faithful per architecture. The study's own explanation stays the one
            every other table is made from.
        decode_on: ``cpu``: Ray Data tasks decode every image. ``gpu``: the tasks read
            files and check headers, and plain baseline JPEGs (no EXIF rotation) are
            decoded in the model actors in one batched nvJPEG call per batch and resized
            on the GPU; other files are decoded in the tasks. For GPU nodes with few CPU
            cores, where decoding bounds explain. Without GPUs the actors decode on CPU.
    """

    method: str = "gradcam"
    layer: str = "last"
    layer_per_arch: dict[str, str] = field(default_factory=dict)
    target: str = "true"
    thetas: tuple[float, ...] = (0.6,)
    ar_grid: int | None = None
    batch_size: int = 32
    precision: str = "fp32"
    mask_tolerance: float = 1e-2
    decode_on: str = "cpu"
    methods: tuple[str, ...] = ()

    def layer_for(self, arch: str, layers: list[str] | tuple[str, ...]) -> str:
        """The named layer ``arch``'s models are explained at.

        Args:
            arch: The architecture.
            layers: Its named layers in order, the paper's last (``CityNet.layers``); an
                architecture with one has no ``previous``: it is explained at that one.
        """
        if arch in self.layer_per_arch:
            return self.layer_per_arch[arch]
        return _relative_layer(self.layer, layers)

    def compared_for(self, arch: str, layers: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
        """The explanations of ``arch``'s models that ``methods`` adds, in their order.

        Args:
            arch: The architecture.
            layers: Its named layers in order (``CityNet.layers``).

        Returns:
            ``(method, named layer)`` pairs, without the study's own explanation and
            without repeats (``previous`` of a one-layer architecture is its last).
        """
        own = (self.method, self.layer_for(arch, layers))
        out: list[tuple[str, str]] = []
        for entry in self.methods:
            method, _, where = entry.partition("@")
            layer = _relative_layer(where, layers) if where else self.layer_for(arch, layers)
            if (method, layer) != own and (method, layer) not in out:
                out.append((method, layer))
        return out


def _relative_layer(where: str, layers: list[str] | tuple[str, ...]) -> str:
    """``last`` or ``previous`` of ``layers`` (an architecture with one has only ``last``)."""
    if where == "last" or len(layers) < 2:
        return layers[-1]
    return layers[-2]


@dataclass(frozen=True)
class AblateConfig:
    """The causal check (stage *ablate*): remove objects, measure what each model loses.

    Attributes:
        fill: How removed pixels are replaced: ``inpaint`` (default: nearest natural
            image statistics), ``blur`` or ``mean`` (see :mod:`citylens.fills`).
        min_pixels: An object is removed only where it has this many pixels at the
            models' input size.
        max_objects: At most this many objects per image, the largest.
        classes: Only these objects (class names of the vocabulary); empty: any.
        steps: Fractions of the image removed along the deletion / insertion curves.
        seed: Seed of the controls' placement and the curves' random order.
        batch_size: Images per batch (a speed knob; does not change results).
    """

    fill: str = "inpaint"
    min_pixels: int = 64
    max_objects: int = 8
    classes: tuple[str, ...] = ()
    steps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4)
    seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class SegmenterConfig:
    """Which segmenter labels the pixels.

    Attributes:
        backend: ``labels`` (ground-truth maps shipped with the data), ``ade20k-ppm``
            (the paper's CSAIL ResNet50-dilated + PPM model) or ``ade20k-upernet``.
        weights: Model backends: folder (path/URI) holding CSAIL's
            ``encoder_epoch_N.pth`` and ``decoder_epoch_N.pth``, or ``random[:SEED]``
            for untrained weights (pipeline tests and benchmarks only).
        classes: Path/URI of a class file (default: ADE20K's 150 classes).
        scales: Test short sides; CSAIL's multi-scale test by default, one value for
            single-scale (about 5× faster).
        max_size: Cap on the long side at any scale.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast on GPU (CPU runs fp32).
        batch_size: Images per segmenter forward pass (speed only).
    """

    backend: str = "labels"
    weights: str | None = None
    classes: str | None = None
    scales: tuple[int, ...] = (300, 375, 450, 525, 600)
    max_size: int = 1000
    precision: str = "fp32"
    batch_size: int = 8

    def options(self, storage_options: dict | None = None) -> dict:
        """Keyword options for :func:`citylens.segment.build_segmenter`."""
        return {
            "scales": self.scales,
            "max_size": self.max_size,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "storage_options": dict(storage_options or {}),
        }


@dataclass(frozen=True)
class AnalysisConfig:
    """Reducers: PCA settings (int = components, float = variance kept), t-SNE, objects.

    Attributes:
        annotations: CSVs (paths/URIs; one, or one per annotator) of human labels per
            explanation (columns ``image, label1[, label2, model, theta, annotator,
            seconds_spent]``, what ``citylens annotate-page`` exports) for the agreement
            curves (thesis Figs 11–12), the annotators' κ and the t-SNE by human label
            (Fig 10).
        agreement_thresholds: Second-label thresholds of those curves.
        bootstrap: Place-clustered bootstrap resamples of the intervals (0: none).
        ci: The intervals' coverage.
    """

    pca: tuple[int | float, ...] = (50, 0.9)
    perplexity: float = 30.0
    min_mean_pixels: float = 100.0
    top_k: int = 10
    mosaic: int = 500
    seed: int = 0
    annotations: tuple[str, ...] = ()
    agreement_thresholds: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
    bootstrap: int = 1000
    ci: float = 0.95


@dataclass(frozen=True)
class RunConfig:
    """Where and how the study runs (none of it changes results).

    Attributes:
        address: Ray address to join (else ``RAY_ADDRESS``, else a local Ray).
        actors: Grad-CAM / segmenter actors per stage (default: one per GPU, else
            one per two CPUs).
        gpus: GPUs to use (one per trial and per model actor). Default: the GPUs the
            cluster has when the stage starts; set it on an autoscaling cluster whose
            GPU workers start at zero (the requests make the autoscaler add them).
        storage_options: fsspec options for s3:// URIs (e.g. ``endpoint_url``);
            credentials belong in the environment, never here.
    """

    address: str | None = None
    actors: int | None = None
    gpus: int | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyConfig:
    """One study: its cities, models, stages' settings and where it runs and stores.

    Each section is read by the stages named here; a stage's key digests the fields it
    reads, so changing one re-runs that stage and what depends on it.

    Attributes:
        name: The study's name (the report's title).
        store: Where every stage writes (a path or ``s3://`` URI; see ARCHITECTURE.md).
        cities: city -> source; *ingest* lists them (none: the synthetic corpus).
        synthetic: The synthetic corpus *ingest* generates when ``cities`` is empty.
        split: How *ingest* splits places into train, val and test.
        models: Architectures × seeds: *train* fits them, every later stage uses them.
        train: *train*'s settings and the input size every model sees.
        explain: *explain*'s Grad-CAM settings; its θ are *overlap*'s and *analyze*'s.
        segmenter: *segment*'s segmenter.
        ablate: *ablate*'s causal check.
        analysis: *analyze*'s reducers and the *report*'s samples.
        run: Where the stages run (a Ray address, actors, GPUs) and the options of the
            store and the sources (credentials: never written to the store).
    """

    name: str = "citylens-demo"
    store: str = "./citylens-demo"
    cities: dict[str, CityConfig] = field(default_factory=dict)
    synthetic: SyntheticConfig = SyntheticConfig()
    split: SplitConfig = SplitConfig()
    models: ModelsConfig = ModelsConfig()
    train: TrainConfig = TrainConfig()
    explain: ExplainConfig = ExplainConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    ablate: AblateConfig = AblateConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        """Plain dict (YAML-ready); storage options are left out (they may hold secrets)."""
        d = _to_plain(self)
        d["run"]["storage_options"] = {k: "<set>" for k in self.run.storage_options}
        return d


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.metadata.get("key", f.name): _to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
