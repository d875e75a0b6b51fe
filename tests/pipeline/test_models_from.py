"""``models.from`` on a real local Ray (slow): a study that takes another's trained models
trains nothing, explains with exactly those models, and refuses test images they trained on.
"""

from __future__ import annotations

import numpy as np
import pytest

from citylens.config import ConfigError, load_config
from citylens.config.validate import preflight
from citylens.errors import InputError
from citylens.pipeline.run import run_study
from citylens.storage import Store

from .conftest import tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _cfg(tmp_path, source, root, *extra, cities=("towerville", "signburg")):
    overrides = tiny_overrides(str(tmp_path / "store"), str(root), cities)
    return load_config(None, [*overrides, f"models.from={source}", *extra])


def test_a_study_on_anothers_models_trains_nothing_and_explains_with_them(
    tiny_study, local_ray, three_cities, tmp_path
):
    cfg = _cfg(tmp_path, tiny_study, three_cities)
    preflight(cfg)
    ran = {
        r.stage: r.status
        for r in run_study(cfg, ["ingest", "train", "explain"], progress=lambda s: None)
    }
    assert ran == {"ingest": "ran", "train": "ran", "explain": "ran"}
    mine, theirs = Store(str(tmp_path / "store")), Store(str(tiny_study))
    rec = mine.record("train")
    assert rec["models_from"] == str(tiny_study) and rec["counts"]["trained"] == 0
    assert {n: m["key"] for n, m in rec["models"].items()} == {
        n: m["key"] for n, m in theirs.record("train")["models"].items()
    }
    for name in rec["models"]:
        assert mine.read_bytes(f"models/{name}/model.pt") == theirs.read_bytes(
            f"models/{name}/model.pt"
        )
        assert mine.record(f"train/{name}")["source"]["val_acc"] is not None
    # the same corpus and split: the same test images, explained by the same models
    a = mine.read_table(f"{mine.record('explain')['folder']}/data").to_pandas()
    b = theirs.read_table(f"{theirs.record('explain')['folder']}/data").to_pandas()
    a, b = (d.sort_values(["model", "image_id"]).reset_index(drop=True) for d in (a, b))
    assert a[["image_id", "model", "pred"]].equals(b[["image_id", "model", "pred"]])
    np.testing.assert_allclose(np.stack(a["mask"]), np.stack(b["mask"]), atol=1e-6)
    # a second run takes nothing again
    again = run_study(cfg, ["ingest", "train"], progress=lambda s: None)
    assert {r.stage: r.status for r in again} == {"ingest": "skipped", "train": "skipped"}


def test_test_images_the_models_trained_on_are_refused(
    tiny_study, local_ray, three_cities, tmp_path
):
    # another split seed deals the same places otherwise: some of its test images
    # trained or validated the source's models
    cfg = _cfg(tmp_path, tiny_study, three_cities, "split.seed=7")
    with pytest.raises(
        InputError, match=r"test image\(s\) of this study show the same image that trained"
    ):
        run_study(cfg, ["ingest", "train"], progress=lambda s: None)
    assert Store(str(tmp_path / "store")).record("train") is None


def test_other_cities_are_refused_before_ray(tiny_study, three_cities, tmp_path):
    cfg = _cfg(tmp_path, tiny_study, three_cities, cities=("towerville", "signburg", "treeham"))
    with pytest.raises(ConfigError, match="this study's are"):
        preflight(cfg)
