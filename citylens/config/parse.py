"""Reading a study: YAML (bounded, safe) plus ``key=value`` overrides -> :class:`StudyConfig`.

Types are checked field by field and every error names the field's dotted path; value
checks (ranges, names, sources) are :mod:`citylens.config.validate`'s.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from citylens.config.schema import CityConfig, ConfigError, StudyConfig
from citylens.storage import read_bytes

__all__ = ["MAX_STUDY_BYTES", "apply_overrides", "dump_config", "load_yaml", "parse_config"]

MAX_STUDY_BYTES = 1 << 20  # a study file is a page of settings, never megabytes
MAX_YAML_NODES = 20_000  # values in a study once its aliases are expanded
MAX_TEXT = 4096  # characters in one string field


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Values ``node`` stands for once every alias in it is expanded.

    Each alias is the node it names, so an alias bomb is counted without being built.
    """
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
        if value is None:  # ``key: null`` (a study written when the field was optional)
            value = []
        elif not isinstance(value, (list, tuple)):
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
    # a field may be spelt otherwise in a study file (models.from: a Python keyword)
    names = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{where}: unknown field; known fields are {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        kwargs[names[key]] = _convert(value, hints[names[key]], sub)
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
    """Name and text of a study YAML given as a path or a URI.

    A URI (``s3://bucket/study.yaml``) is read with the ``run.storage_options`` the
    overrides give, if any.
    """
    name = str(source)
    if "://" in name and not name.startswith("file://"):
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


def parse_config(
    source: str | Path | dict | None = None, overrides: list[str] | None = None
) -> StudyConfig:
    """Read and override a study config, types checked.

    Values are not checked: :func:`citylens.config.load_config` does that too.

    Args:
        source: A YAML path or URI (``s3://…``), a dict, or None (all defaults: the
            synthetic study).
        overrides: ``key=value`` strings applied on top.

    Raises:
        ConfigError: naming the first field of the wrong type.
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
    return _from_dict(StudyConfig, data)


def dump_config(cfg: StudyConfig) -> str:
    """YAML text of a config (without storage options)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
