"""Checks a study config must pass before any Ray work starts.

:func:`validate_config` checks values (no I/O); :func:`preflight` checks the world: that
every city has images and the store can be written.
"""

from __future__ import annotations

import json
import os
import re
import uuid
import warnings

from citylens.config.schema import ConfigError, StudyConfig
from citylens.storage import filesystem

__all__ = ["check_sources", "preflight", "validate_config"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_INPUT = 1024  # px: VGG11 at 1024 px needs ~20 GB of activations per 32 images
MAX_OPTIONS = 16_384  # characters of run.storage_options as JSON
TORCHVISION_ARCHS = ("vgg11", "resnet18")
RETRAIN = ("always", "new_city")  # train.retrain


def _require(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: {message}")


def _at_most(value, limit, path: str, why: str = "") -> None:
    """Refuse an absurd size before it becomes a memory error deep inside a stage."""
    _require(value <= limit, path, f"at most {limit:,}{why}, got {value:,}")


def _unique(values, path: str) -> None:
    seen = set()
    for i, v in enumerate(values):
        _require(v not in seen, f"{path}[{i}]", f"{v!r} is listed twice")
        seen.add(v)


def _location(source: str, resolve: bool = False) -> str:
    """A source as ``scheme://path`` without a trailing slash.

    Local paths are made absolute (with symbolic links resolved when ``resolve``).
    """
    import fsspec

    protocol = fsspec.utils.get_protocol(source)
    if protocol in ("file", "local"):
        path = os.path.expanduser(source.removeprefix("file://"))
        path = os.path.realpath(path) if resolve else os.path.abspath(path)
        return "file://" + path.rstrip("/")
    rest = source.split("://", 1)[1] if "://" in source else source
    return f"{protocol}://{rest.strip('/')}"


def check_sources(cfg: StudyConfig, resolve: bool = False) -> None:
    """Refuse two cities whose sources are one folder, or one inside the other.

    Their images would be listed under both cities: the same photo would carry two
    labels, and its views could train one city and test the other. Cities that each
    list their images in a manifest may share a root (the manifests choose); an image
    listed by both is then refused at ingest as ``duplicate_across_cities``.

    Args:
        cfg: The study.
        resolve: Resolve symbolic links of local folders (touches the disk: preflight).

    Raises:
        ConfigError: naming both cities' ``source`` fields.
    """
    where = {name: _location(c.source, resolve) for name, c in cfg.cities.items()}
    names = sorted(where)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if cfg.cities[a].manifest and cfg.cities[b].manifest:
                continue
            la, lb = where[a], where[b]
            if la == lb:
                how = "is the same folder as"
            elif lb.startswith(la + "/") or la.startswith(lb + "/"):
                how = "is inside" if lb.startswith(la + "/") else "contains"
            else:
                continue
            raise ConfigError(
                f"cities.{b}.source: {cfg.cities[b].source} {how} cities.{a}.source "
                f"({cfg.cities[a].source}): its images would be listed under both cities; "
                "give each city a folder of its own (or a manifest each)"
            )


def validate_config(cfg: StudyConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid field (fields in file order)."""
    _check_names(cfg)
    _check_synthetic(cfg)
    _check_models(cfg)
    _check_train(cfg)
    _check_explain(cfg)
    _check_segmenter(cfg)
    _check_ablate(cfg)
    _check_analysis(cfg)


def _check_names(cfg: StudyConfig) -> None:
    """The cities fields."""
    _require(bool(_NAME.match(cfg.name)), "name", f"{cfg.name!r} must be letters, digits, ._-")
    _require(bool(cfg.store.strip()), "store", "must be a path or URI")

    if cfg.cities:
        _require(
            len(cfg.cities) >= 2,
            "cities",
            f"a study needs at least two cities, got {len(cfg.cities)}",
        )
        for name, city in cfg.cities.items():
            _require(
                bool(_NAME.match(name)),
                f"cities.{name}",
                "city names are letters, digits, ._- (they become folder names)",
            )
            _require(bool(city.source.strip()), f"cities.{name}.source", "must be a path or URI")
            if city.place_regex is not None:
                try:
                    groups = set(re.compile(city.place_regex).groupindex)
                except re.error as err:
                    raise ConfigError(f"cities.{name}.place_regex: invalid regex: {err}") from None
                _require(
                    ("lat" in groups) == ("lon" in groups),
                    f"cities.{name}.place_regex",
                    "names a group 'lat' or 'lon' but not both; coordinates need the two",
                )
        check_sources(cfg)


def _check_synthetic(cfg: StudyConfig) -> None:
    """The synthetic corpus fields."""
    syn = cfg.synthetic
    _require(syn.cities >= 2, "synthetic.cities", f"needs at least 2, got {syn.cities}")
    _require(syn.places >= 3, "synthetic.places", f"needs at least 3, got {syn.places}")
    _require(syn.views >= 1, "synthetic.views", f"needs at least 1, got {syn.views}")
    _require(syn.size >= 32, "synthetic.size", f"needs at least 32 px, got {syn.size}")
    _at_most(syn.cities, 100, "synthetic.cities")
    _at_most(syn.size, 1024, "synthetic.size", " px")
    _at_most(syn.places * syn.views, 1_000_000, "synthetic.places", " images per city (× views)")


def _check_models(cfg: StudyConfig) -> None:
    """The split and models fields."""
    from citylens.models import ARCHITECTURES  # torch: imported when a study is checked

    for i, r in enumerate(cfg.split.ratios):
        _require(r > 0, f"split.ratios[{i}]", f"must be positive, got {r}")
    if (block := cfg.split.block_m) is not None:
        _require(
            1.0 <= block <= 100_000.0,
            "split.block_m",
            f"must be between 1 and 100000 metres, got {block:g}",
        )

    _require(len(cfg.models.archs) > 0, "models.archs", "name at least one architecture")
    _require(len(cfg.models.seeds) > 0, "models.seeds", "name at least one seed")
    for i, arch in enumerate(cfg.models.archs):
        _require(
            arch in ARCHITECTURES,
            f"models.archs[{i}]",
            f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}",
        )
    _unique(cfg.models.archs, "models.archs")
    _unique(cfg.models.seeds, "models.seeds")
    for i, seed in enumerate(cfg.models.seeds):
        _require(seed >= 0, f"models.seeds[{i}]", f"must be ≥ 0, got {seed}")
    for arch in cfg.models.init_weights:
        _require(
            arch in TORCHVISION_ARCHS,
            f"models.init_weights.{arch}",
            f"initial weights are supported for {', '.join(TORCHVISION_ARCHS)}",
        )


def _check_train(cfg: StudyConfig) -> None:
    """The training fields."""
    import torch

    from citylens.models import ARCHITECTURES, GeometryError, build_model

    t = cfg.train
    _require(t.epochs >= 1, "train.epochs", f"must be ≥ 1, got {t.epochs}")
    _require(
        t.checkpoint_every >= 0,
        "train.checkpoint_every",
        f"must be ≥ 0 (0 = no checkpoints), got {t.checkpoint_every}",
    )
    _require(t.max_failures >= 0, "train.max_failures", f"must be ≥ 0, got {t.max_failures}")
    _require(
        t.data in ("auto", "store", "node_cache"),
        "train.data",
        f"must be auto, store or node_cache, got {t.data!r}",
    )
    _require(bool(t.cache_dir), "train.cache_dir", "must name a folder")
    _require(
        t.precision in ("fp32", "bf16"),
        "train.precision",
        f"must be fp32 or bf16, got {t.precision!r}",
    )
    _require(
        t.retrain in RETRAIN,
        "train.retrain",
        f"must be one of {', '.join(RETRAIN)}, got {t.retrain!r}",
    )
    for arch, e in t.epochs_per_arch.items():
        _require(arch in ARCHITECTURES, f"train.epochs_per_arch.{arch}", "unknown architecture")
        _require(e >= 1, f"train.epochs_per_arch.{arch}", f"must be ≥ 1, got {e}")
    _require(t.batch_size >= 1, "train.batch_size", f"must be ≥ 1, got {t.batch_size}")
    _require(t.lr > 0, "train.lr", f"must be positive, got {t.lr}")
    for i, b in enumerate(t.betas):
        _require(0 <= b < 1, f"train.betas[{i}]", f"must be in [0, 1), got {b}")
    _require(t.eps > 0, "train.eps", f"must be positive, got {t.eps}")
    _require(t.lr_step >= 1, "train.lr_step", f"must be ≥ 1, got {t.lr_step}")
    _require(0 < t.lr_gamma <= 1, "train.lr_gamma", f"must be in (0, 1], got {t.lr_gamma}")
    _require(t.input_size >= 32, "train.input_size", f"must be ≥ 32 px, got {t.input_size}")
    _at_most(t.input_size, MAX_INPUT, "train.input_size", " px (the paper's is 224)")
    _at_most(t.epochs, 10_000, "train.epochs")
    _at_most(t.batch_size, 65_536, "train.batch_size")
    for arch, e in t.epochs_per_arch.items():
        _at_most(e, 10_000, f"train.epochs_per_arch.{arch}")
    with torch.device("meta"):  # geometry only: no memory, no FLOPs
        for arch in cfg.models.archs:
            try:
                build_model(arch, max(2, len(cfg.cities)), t.input_size)
            except GeometryError as err:
                raise ConfigError(f"train.input_size: {err}") from None


def _check_explain(cfg: StudyConfig) -> None:
    """The explanation fields."""
    import torch  # late: the config loads without torch until it is checked

    from citylens.cam import METHODS
    from citylens.models import build_model

    e = cfg.explain
    _require(
        e.method in METHODS,
        "explain.method",
        f"must be one of {', '.join(METHODS)}, got {e.method!r}",
    )
    _require(
        e.layer in ("last", "previous"),
        "explain.layer",
        f"must be 'last' or 'previous' (or name one per architecture in "
        f"explain.layer_per_arch), got {e.layer!r}",
    )
    for i, entry in enumerate(e.methods):
        method, at, where = entry.partition("@")
        _require(
            method in METHODS,
            f"explain.methods[{i}]",
            f"{entry!r}: the method must be one of {', '.join(METHODS)}",
        )
        _require(
            not at or where in ("last", "previous"),
            f"explain.methods[{i}]",
            f"{entry!r}: write <method>, <method>@last or <method>@previous",
        )
    _unique(e.methods, "explain.methods")
    with torch.device("meta"):
        for arch, name in e.layer_per_arch.items():
            field_name = f"explain.layer_per_arch.{arch}"
            _require(arch in cfg.models.archs, field_name, "not an architecture of the study")
            layers = build_model(arch, max(2, len(cfg.cities)), cfg.train.input_size).layers
            _require(
                name in layers, field_name, f"{arch} has layers {', '.join(layers)}, not {name!r}"
            )
    _require(
        e.target in ("true", "pred"),
        "explain.target",
        f"must be 'true' or 'pred', got {e.target!r}",
    )
    _require(len(e.thetas) > 0, "explain.thetas", "name at least one θ")
    for i, theta in enumerate(e.thetas):
        _require(0 < theta < 1, f"explain.thetas[{i}]", f"θ must be in (0, 1), got {theta}")
    _unique(e.thetas, "explain.thetas")
    if e.ar_grid is not None:
        _require(e.ar_grid >= 1, "explain.ar_grid", f"must be ≥ 1, got {e.ar_grid}")
        _at_most(e.ar_grid, MAX_INPUT, "explain.ar_grid", " px")
    _require(e.batch_size >= 1, "explain.batch_size", f"must be ≥ 1, got {e.batch_size}")
    _at_most(e.batch_size, 65_536, "explain.batch_size")
    _require(
        e.precision in ("fp32", "bf16", "fp16"),
        "explain.precision",
        f"must be fp32, bf16 or fp16, got {e.precision!r}",
    )
    _require(
        0 < e.mask_tolerance < 1,
        "explain.mask_tolerance",
        f"must be in (0, 1), got {e.mask_tolerance}",
    )
    _require(
        e.decode_on in ("cpu", "gpu"),
        "explain.decode_on",
        f"must be cpu or gpu, got {e.decode_on!r}",
    )


def _check_segmenter(cfg: StudyConfig) -> None:
    """The segmenter fields."""
    from citylens.segment import SEGMENTERS  # late: the segmenters import torch models

    _require(
        cfg.segmenter.backend in SEGMENTERS,
        "segmenter.backend",
        f"unknown segmenter {cfg.segmenter.backend!r}; choose from {', '.join(sorted(SEGMENTERS))}",
    )
    seg = cfg.segmenter
    if SEGMENTERS[seg.backend].input_kind == "image":
        _require(
            bool(seg.weights),
            "segmenter.weights",
            f"{seg.backend} needs weights: a folder with CSAIL's encoder_epoch_N.pth and "
            "decoder_epoch_N.pth (or 'random' for an untrained smoke test)",
        )
    _require(len(seg.scales) > 0, "segmenter.scales", "name at least one test scale")
    for i, s in enumerate(seg.scales):
        _require(s >= 16, f"segmenter.scales[{i}]", f"must be ≥ 16 px, got {s}")
        _at_most(s, 8192, f"segmenter.scales[{i}]", " px")
    _at_most(seg.max_size, 8192, "segmenter.max_size", " px")
    _require(
        seg.max_size >= max(seg.scales),
        "segmenter.max_size",
        f"must be ≥ the largest scale ({max(seg.scales)}), got {seg.max_size}",
    )
    _require(
        seg.precision in ("fp32", "bf16", "fp16"),
        "segmenter.precision",
        f"must be fp32, bf16 or fp16, got {seg.precision!r}",
    )
    _require(seg.batch_size >= 1, "segmenter.batch_size", f"must be ≥ 1, got {seg.batch_size}")
    _at_most(seg.batch_size, 4096, "segmenter.batch_size")


def _check_ablate(cfg: StudyConfig) -> None:
    """The causal check's fields."""
    from citylens.fills import FILLS

    a = cfg.ablate
    _require(a.fill in FILLS, "ablate.fill", f"choose from {', '.join(FILLS)}, got {a.fill!r}")
    _require(a.min_pixels >= 1, "ablate.min_pixels", f"must be ≥ 1, got {a.min_pixels}")
    _require(a.max_objects >= 1, "ablate.max_objects", f"must be ≥ 1, got {a.max_objects}")
    _at_most(a.max_objects, 150, "ablate.max_objects", " objects per image")
    _unique(a.classes, "ablate.classes")
    _require(len(a.steps) >= 2, "ablate.steps", "name at least two fractions")
    _require(a.steps[0] == 0, "ablate.steps", f"start at 0 (the whole image), got {a.steps[0]}")
    for i, f in enumerate(a.steps):
        _require(0 <= f < 1, f"ablate.steps[{i}]", f"must be in [0, 1), got {f}")
    _require(all(x < y for x, y in zip(a.steps, a.steps[1:])), "ablate.steps", "must be ascending")
    _require(a.batch_size >= 1, "ablate.batch_size", f"must be ≥ 1, got {a.batch_size}")
    _at_most(a.batch_size, 4096, "ablate.batch_size")


def _check_analysis(cfg: StudyConfig) -> None:
    """The analysis and run fields."""
    a = cfg.analysis
    _require(len(a.pca) > 0, "analysis.pca", "name at least one PCA setting")
    for i, k in enumerate(a.pca):
        ok = (isinstance(k, int) and k >= 1) or (isinstance(k, float) and 0 < k < 1)
        _require(
            ok,
            f"analysis.pca[{i}]",
            f"an int ≥ 1 (components) or a float in (0, 1) (variance kept), got {k}",
        )
    for i, k in enumerate(a.pca):
        if isinstance(k, int):
            _at_most(k, 100_000, f"analysis.pca[{i}]", " components")
    _require(a.perplexity > 0, "analysis.perplexity", f"must be positive, got {a.perplexity}")
    _at_most(a.perplexity, 10_000, "analysis.perplexity")
    _require(
        len(a.agreement_thresholds) > 0,
        "analysis.agreement_thresholds",
        "name at least one threshold",
    )
    for i, t in enumerate(a.agreement_thresholds):
        _require(0 <= t <= 1, f"analysis.agreement_thresholds[{i}]", f"must be in [0, 1], got {t}")
    _require(a.min_mean_pixels >= 0, "analysis.min_mean_pixels", "must be ≥ 0")
    _require(a.bootstrap >= 0, "analysis.bootstrap", f"must be ≥ 0, got {a.bootstrap}")
    _at_most(a.bootstrap, 100_000, "analysis.bootstrap", " resamples")
    _require(0 < a.ci < 1, "analysis.ci", f"must be in (0, 1), got {a.ci}")
    _require(a.top_k >= 1, "analysis.top_k", f"must be ≥ 1, got {a.top_k}")
    _require(a.mosaic >= 0, "analysis.mosaic", f"must be ≥ 0, got {a.mosaic}")
    _at_most(a.mosaic, 100_000, "analysis.mosaic", " thumbnails")
    _at_most(a.top_k, 10_000, "analysis.top_k")
    if cfg.run.actors is not None:
        _require(cfg.run.actors >= 1, "run.actors", f"must be ≥ 1, got {cfg.run.actors}")
    if cfg.run.gpus is not None:
        _require(cfg.run.gpus >= 0, "run.gpus", f"must be ≥ 0, got {cfg.run.gpus}")
    opts = json.dumps(cfg.run.storage_options, default=str)
    _at_most(len(opts), MAX_OPTIONS, "run.storage_options", " characters as JSON")


def preflight(cfg: StudyConfig) -> None:
    """Check the world before Ray starts: the store is writable and every city has images.

    Raises:
        ConfigError: naming ``store`` or ``cities.<name>.source``.
    """
    from citylens.data.manifest import scan_city

    opts = cfg.run.storage_options
    check_sources(cfg, resolve=True)
    _check_init_weights(cfg)
    if cfg.models.source:
        from citylens.config.models_from import check_models_from

        check_models_from(cfg)
    seg = cfg.segmenter
    if seg.weights and not re.match(r"^random(:\d+)?$", seg.weights):
        from citylens.segment.model import check_csail_weights

        try:
            check_csail_weights(seg.backend, seg.weights, opts)
        except Exception as err:
            raise ConfigError(f"segmenter.weights: {err}") from None
    if seg.classes:
        from citylens.segment import vocabulary_of
        from citylens.storage import read_bytes

        try:
            vocabulary_of(seg.backend, read_bytes(seg.classes, opts).decode())
        except Exception as err:
            raise ConfigError(f"segmenter.classes: {seg.classes}: {err}") from None
    for i, uri in enumerate(cfg.analysis.annotations):
        from citylens.analysis.annotations import parse_annotations
        from citylens.segment import vocabulary_of
        from citylens.storage import read_bytes

        try:
            text = read_bytes(uri, opts).decode()
            classes = read_bytes(seg.classes, opts).decode() if seg.classes else None
            parse_annotations(text, vocabulary_of(seg.backend, classes), uri)
        except Exception as err:
            raise ConfigError(f"analysis.annotations[{i}]: {err}") from None
    for name, city in cfg.cities.items():
        if city.manifest:
            from citylens.data.listing import read_entries

            try:
                if not read_entries(city.manifest, opts):
                    raise ValueError("lists no images")
            except Exception as err:
                raise ConfigError(
                    f"cities.{name}.manifest: {city.manifest}: {type(err).__name__}: {err}"
                ) from None
        try:
            scan_city(name, city.source, city.place_regex, None, opts, city.follow_links)
        except FileNotFoundError as err:
            raise ConfigError(f"cities.{name}.source: {err}") from None
        except Exception as err:
            raise ConfigError(
                f"cities.{name}.source: cannot list {city.source} ({type(err).__name__}: {err})"
            ) from None
    _check_store(cfg)


def _check_store(cfg: StudyConfig) -> None:
    """The store can be written (a probe file, removed again).

    A local store's folder is created; a bucket never is.
    """
    try:
        fs, root = filesystem(cfg.store, cfg.run.storage_options)
        if "file" in fs.protocol:
            fs.makedirs(root, exist_ok=True)  # never on S3: it would create a bucket
        probe = f"{root.rstrip('/')}/.citylens-write-test-{uuid.uuid4().hex}"
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as err:
        raise ConfigError(
            f"store: cannot write to {cfg.store} ({type(err).__name__}: {err})"
        ) from None


def _check_init_weights(cfg: StudyConfig) -> None:
    """Every ``models.init_weights`` file loads and fits its architecture.

    It must exist, hold plain tensors (``weights_only``) and fit key for key (the model
    is built on the meta device: no memory, no FLOPs), so a bad file stops the study
    here, not in a training worker.
    """
    import torch

    from citylens.models import build_model

    for arch, uri in sorted(cfg.models.init_weights.items()):
        field = f"models.init_weights.{arch}"
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "copying ... is a no-op"
                build_model(
                    arch,
                    max(2, len(cfg.cities)),
                    cfg.train.input_size,
                    uri,
                    cfg.run.storage_options,
                )
        except FileNotFoundError:
            raise ConfigError(f"{field}: {uri} does not exist") from None
        except Exception as err:
            raise ConfigError(f"{field}: {err}") from None
