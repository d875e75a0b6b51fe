"""``models.from``: the other study's models are checked against this one before Ray."""

from __future__ import annotations

import json

import pytest
import yaml

from citylens.config import ConfigError, dump_config, load_config
from citylens.config.models_from import check_models_from, study_cities
from citylens.storage import Store


def _source(tmp_path, cities=("signburg", "towerville"), size=96, models=("simple-s0",)):
    """A store holding trained models as the train stage leaves them (records, metas)."""
    store = Store(str(tmp_path / "source"))
    recs = {}
    for name in models:
        arch, seed = name.rsplit("-s", 1)
        recs[name] = {"arch": arch, "seed": int(seed), "key": f"k-{name}"}
        meta = {"arch": arch, "seed": int(seed), "cities": list(cities), "input_size": size}
        store.write_bytes(f"models/{name}/meta.json", json.dumps(meta).encode())
        store.commit(
            f"train/{name}", {"key": f"k-{name}", "folder": f"models/{name}", "val_acc": 0.9}
        )
    store.commit("train", {"models": recs})
    return store


def _cfg(source, *extra):
    return load_config(
        None,
        [
            f"models.from={source.uri}",
            "models.archs=[simple]",
            "models.seeds=[0]",
            "train.input_size=96",
            "synthetic.cities=2",
            *extra,
        ],
    )


def test_models_from_is_spelt_from_in_a_study_file_and_round_trips(tmp_path):
    cfg = _cfg(_source(tmp_path))
    text = dump_config(cfg)
    assert f"from: {cfg.models.source}" in text and "source:" not in text
    assert load_config(yaml.safe_load(text)) == cfg


def test_matching_models_are_taken_with_their_keys_and_folders(tmp_path):
    source = _source(tmp_path, models=("simple-s0", "simple-s1"))
    cfg = _cfg(source)
    assert study_cities(cfg) == ["signburg", "towerville"]  # the synthetic two, sorted
    got = check_models_from(cfg)
    assert list(got) == ["simple-s0"]  # models.seeds names one of the two
    assert got["simple-s0"]["key"] == "k-simple-s0"
    assert got["simple-s0"]["folder"] == "models/simple-s0"
    assert got["simple-s0"]["record"]["val_acc"] == 0.9


@pytest.mark.parametrize(
    ("source_args", "extra", "message"),
    [
        ({"cities": ("towerville", "signburg")}, [], "knows the cities ['towerville', 'signburg']"),
        ({"cities": ("a", "b", "c")}, [], "this study's are ['signburg', 'towerville']"),
        ({"size": 64}, [], "was trained at 64 px; this study's train.input_size is 96"),
        ({}, ["models.archs=[simple,vgg11]"], "not vgg11-s0: set models.archs"),
        (
            {"models": ("vgg11-s0",)},
            ["models.archs=[vgg11]", "models.init_weights.vgg11=/w.pt"],
            "models.init_weights: not used with models.from",
        ),
    ],
)
def test_a_mismatch_names_both_sides(tmp_path, source_args, extra, message):
    cfg = _cfg(_source(tmp_path, **source_args), *extra)
    with pytest.raises(ConfigError, match="models") as err:
        check_models_from(cfg)
    assert message in str(err.value)


def test_a_store_without_trained_models_is_named(tmp_path):
    cfg = _cfg(Store(str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="has no trained models"):
        check_models_from(cfg)
