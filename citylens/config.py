"""The study config: one frozen object per study, from YAML plus ``key=value`` overrides.

Every field has a default (the paper's settings); with no ``cities`` the study runs on
a synthetic corpus generated into its store. Validation happens before any Ray work
and names the offending field, e.g. ``models.archs[1]: unknown architecture 'alexnet'``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
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
    "apply_overrides",
    "load_config",
    "load_yaml",
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


@dataclass(frozen=True)
class SplitConfig:
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0


@dataclass(frozen=True)
class ModelsConfig:
    """Architectures × seeds (default: the paper's four, two seeds each).

    Attributes:
        init_weights: arch -> path/URI of torchvision-format starting weights.
    """

    archs: tuple[str, ...] = ("vgg11", "resnet18", "simple", "simpler")
    seeds: tuple[int, ...] = (0, 1)
    init_weights: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """The paper's training setup; ``epochs_per_arch`` overrides ``epochs`` per arch.

    Attributes:
        checkpoint_every: Epochs between crash-safe checkpoints of the whole training
            state (weights, optimiser, schedule, best state, random generator) in the
            store; a re-run after a crash resumes from the last one. 0 turns them off.
            Does not change results.
    """

    epochs: int = 30
    epochs_per_arch: dict[str, int] = field(default_factory=dict)
    batch_size: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_step: int = 10
    lr_gamma: float = 0.1
    input_size: int = 224
    checkpoint_every: int = 1

    def epochs_for(self, arch: str) -> int:
        return self.epochs_per_arch.get(arch, self.epochs)


@dataclass(frozen=True)
class ExplainConfig:
    """Grad-CAM settings.

    Attributes:
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
        decode_on: ``cpu``: Ray Data tasks decode every image. ``gpu``: the tasks read
            files and check headers, and plain baseline JPEGs (no EXIF rotation) are
            decoded in the model actors in one batched nvJPEG call per batch and resized
            on the GPU; other files are decoded in the tasks. For GPU nodes with few CPU
            cores, where decoding bounds explain. Without GPUs the actors decode on CPU.
    """

    target: str = "true"
    thetas: tuple[float, ...] = (0.6,)
    ar_grid: int | None = None
    batch_size: int = 32
    precision: str = "fp32"
    mask_tolerance: float = 1e-2
    decode_on: str = "cpu"


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
        annotations: Optional CSV (path/URI) of human labels per image (columns
            ``image, label1, label2``) for the agreement curves (thesis Figs 11–12).
        agreement_thresholds: Second-label thresholds of those curves.
    """

    pca: tuple[int | float, ...] = (50, 0.9)
    perplexity: float = 30.0
    min_mean_pixels: float = 100.0
    top_k: int = 10
    mosaic: int = 500
    seed: int = 0
    annotations: str | None = None
    agreement_thresholds: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))


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
    name: str = "citylens-demo"
    store: str = "./citylens-demo"
    cities: dict[str, CityConfig] = field(default_factory=dict)
    synthetic: SyntheticConfig = SyntheticConfig()
    split: SplitConfig = SplitConfig()
    models: ModelsConfig = ModelsConfig()
    train: TrainConfig = TrainConfig()
    explain: ExplainConfig = ExplainConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        """Plain dict (YAML-ready); storage options are left out (they may hold secrets)."""
        d = _to_plain(self)
        d["run"]["storage_options"] = {k: "<set>" for k in self.run.storage_options}
        return d


# --------------------------------------------------------------------------- parsing

MAX_STUDY_BYTES = 1 << 20  # a study file is a page of settings, never megabytes
MAX_YAML_NODES = 20_000  # values in a study once its aliases are expanded
MAX_TEXT = 4096  # characters in one string field


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Values ``node`` stands for once every alias in it is expanded (each alias is the
    node it names, so an alias bomb is counted without being built)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        raise ConfigError("a YAML alias refers to a value that contains it (a cycle)")
    open_.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo, open_) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(k, memo, open_) + _expanded_size(v, memo, open_) for k, v in node.value
        )
    else:
        size = 1
    open_.discard(key)
    memo[key] = size
    return size


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML safely, refusing documents whose aliases expand beyond a small bound.

    ``yaml.safe_load`` builds an alias as a shared object, but turning the config into
    plain data (and writing it back) expands every use: nine levels of ten-fold aliases
    are a few hundred bytes of YAML and a billion values. Anchors and aliases within
    :data:`MAX_YAML_NODES` values stay allowed (a place regex shared by cities).

    Args:
        text: The YAML text.
        where: The file or field it came from, for messages.

    Raises:
        ConfigError: naming ``where``, for invalid YAML, a cycle or an oversized value.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()  # the node graph: an alias is one shared node
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, set())
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        except RecursionError:
            raise ConfigError(f"{where}: values nested too deeply") from None
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: expands to {size:,} values once its aliases are followed "
                f"(at most {MAX_YAML_NODES:,}); write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is CityConfig:
            value = {"source": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args
        return {str(k): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        if len(text := str(value)) > MAX_TEXT:
            raise ConfigError(f"{path}: {len(text)} characters, at most {MAX_TEXT}")
        if "\0" in text:
            raise ConfigError(f"{path}: contains a NUL character")
        return text
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover


def _from_dict(cls: type, data: dict, path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - names)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown field; known fields are {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        kwargs[key] = _convert(value, hints[key], sub)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        missing = re.findall(r"'(\w+)'", str(err))
        where = f"{path}.{missing[0]}" if path and missing else (missing[0] if missing else path)
        raise ConfigError(f"{where}: required field is missing") from None


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif isinstance(child, str):  # cities.X: "path" shorthand
            child = node[k] = {"source": child}
        elif not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: overrides look like key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        value = load_yaml(raw, key.strip()) if raw else None
        _set_dotted(data, key.strip(), value)
    return data


def _read_source(source, overrides: list[str]) -> tuple[str, str]:
    """Name and text of a study YAML given as a path or a URI (``s3://bucket/study.yaml``,
    read with the ``run.storage_options`` the overrides give, if any)."""
    name = str(source)
    if "://" in name and not name.startswith("file://"):
        from citylens.storage import read_bytes

        opts = apply_overrides({}, [o for o in overrides if o.startswith("run.")])
        opts = opts.get("run", {}).get("storage_options") or {}
        try:
            data = read_bytes(name, opts)
        except FileNotFoundError:
            raise ConfigError(f"study config {name} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"study config {name} is a folder, not a YAML file") from None
        except Exception as err:
            raise ConfigError(f"study config {name}: cannot read ({type(err).__name__})") from None
        return name, _text(data, name)
    path = Path(name.removeprefix("file://"))
    if not path.exists():
        raise ConfigError(f"study config {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"study config {path} is a folder, not a YAML file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STUDY_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"study config {path}: cannot read ({err.strerror or err})") from None
    return str(path), _text(data, str(path))


def _text(data: bytes, name: str) -> str:
    """A study file's bytes as text: UTF-8, at most :data:`MAX_STUDY_BYTES`."""
    if len(data) > MAX_STUDY_BYTES:
        raise ConfigError(
            f"study config {name} is over {MAX_STUDY_BYTES >> 20} MB: not a study file"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"study config {name} is not UTF-8 text (byte 0x{data[err.start]:02x} at "
            f"offset {err.start}): a study is a YAML file"
        ) from None


def load_config(
    source: str | Path | dict | None = None, overrides: list[str] | None = None
) -> StudyConfig:
    """Load, override and validate a study config.

    Args:
        source: A YAML path or URI (``s3://…``), a dict, or None (all defaults: the
            synthetic study).
        overrides: ``key=value`` strings applied on top.

    Raises:
        ConfigError: naming the first invalid field.
    """
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        path, text = _read_source(source, list(overrides or []))
        data = load_yaml(text, path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a study config is a mapping of fields")
    data = apply_overrides(data, list(overrides or []))
    cfg = _from_dict(StudyConfig, data)
    from citylens.validate import validate_config  # late: validation imports models

    validate_config(cfg)
    return cfg


def dump_config(cfg: StudyConfig) -> str:
    """YAML text of a config (without storage options)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
