"""The study config: one frozen object per study, from YAML plus ``key=value`` overrides.

Every field has a default (the paper's settings); with no ``cities`` the study runs on
a synthetic corpus generated into its store. Validation happens before any Ray work
and names the offending field, e.g. ``models.archs[1]: unknown architecture 'alexnet'``.

Three modules: :mod:`~citylens.config.schema` (the dataclasses, importing nothing of
citylens), :mod:`~citylens.config.parse` (YAML and overrides into them) and
:mod:`~citylens.config.validate` (values, then the world: sources, weights, the store);
neither of the last two imports the other, and none imports torch until a check needs it.
"""

from __future__ import annotations

from pathlib import Path

from citylens.config.parse import apply_overrides, dump_config, load_yaml, parse_config
from citylens.config.schema import (
    AblateConfig,
    AnalysisConfig,
    CityConfig,
    ConfigError,
    ExplainConfig,
    ModelsConfig,
    RunConfig,
    SegmenterConfig,
    SplitConfig,
    StudyConfig,
    SyntheticConfig,
    TrainConfig,
)
from citylens.config.validate import validate_config

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
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_yaml",
]


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
    cfg = parse_config(source, overrides)
    validate_config(cfg)
    return cfg
