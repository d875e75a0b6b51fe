"""Fuzzing the study config: any value in any field is accepted or refused naming the
field — never a traceback from deeper down (hypothesis)."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citylens.config import CityConfig, ConfigError, StudyConfig, load_config


def _paths(cls, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _paths(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is dict and f.name == "cities":
            out += _paths(CityConfig, f"{prefix}cities.fuzz.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


FIELDS = _paths(StudyConfig)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)


def test_every_field_is_reachable():
    assert {"train.epochs", "explain.thetas", "segmenter.backend", "run.gpus"} <= set(FIELDS)
    assert "cities.fuzz.place_regex" in FIELDS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_value_is_accepted_or_refused_naming_its_field(field, value):
    override = f"{field}={yaml.safe_dump(value, default_flow_style=True).strip()}"
    if override.endswith("\n...") or "\n" in override:
        override = override.split("\n")[0]
    base = ["cities.fuzz=/x", "cities.other=/y"] if field.startswith("cities.") else []
    try:
        cfg = load_config(None, [*base, override])
    except ConfigError as err:
        top = field.split(".")[0]
        assert str(err).startswith((top, "overrides look like")) or field in str(err), str(err)
    else:
        assert isinstance(cfg, StudyConfig)


@pytest.mark.parametrize("override", ["train.epochs=-3", "explain.thetas=[2]", "run.gpus=x"])
def test_cli_refuses_bad_values_before_ray_starts(override, capsys):
    import ray

    from citylens.cli import main

    assert main(["run", "demo", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("citylens: invalid study: ") and "Traceback" not in err
    assert not ray.is_initialized()
