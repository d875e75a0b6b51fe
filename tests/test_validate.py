import pytest

from citylens.config import ConfigError, load_config
from citylens.validate import preflight


def test_preflight_accepts_real_sources(tmp_path, small_corpus):
    cfg = load_config(
        None,
        [
            f"store={tmp_path / 'store'}",
            f"cities.a={small_corpus / 'towerville'}",
            f"cities.b={small_corpus / 'signburg'}",
        ],
    )
    preflight(cfg)
    assert (tmp_path / "store").is_dir()
    assert not list((tmp_path / "store").iterdir())  # the write probe is cleaned up


def test_preflight_names_the_empty_city(tmp_path, small_corpus):
    (tmp_path / "empty").mkdir()
    cfg = load_config(
        None,
        [
            f"store={tmp_path / 's'}",
            f"cities.a={small_corpus / 'signburg'}",
            f"cities.b={tmp_path / 'empty'}",
        ],
    )
    with pytest.raises(ConfigError, match="cities.b.source: city 'b': no images"):
        preflight(cfg)


def test_preflight_names_an_unwritable_store(tmp_path, small_corpus):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = load_config(
        None,
        [
            f"store={blocker}/store",
            f"cities.a={small_corpus / 'signburg'}",
            f"cities.b={small_corpus / 'towerville'}",
        ],
    )
    with pytest.raises(ConfigError, match="store: cannot write"):
        preflight(cfg)


def test_preflight_names_segmenter_weights_without_checkpoints(tmp_path, small_corpus):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "encoder_epoch_20.pth").write_bytes(b"")
    cfg = load_config(
        None,
        [
            f"store={tmp_path / 's'}",
            f"cities.a={small_corpus / 'signburg'}",
            f"cities.b={small_corpus / 'towerville'}",
            "segmenter.backend=ade20k-ppm",
            f"segmenter.weights={tmp_path / 'weights'}",
        ],
    )
    with pytest.raises(ConfigError, match="segmenter.weights: .*decoder_epoch_N.pth"):
        preflight(cfg)


def test_preflight_names_a_class_file_of_the_wrong_size(tmp_path, small_corpus):
    classes = tmp_path / "classes.csv"
    classes.write_text("index,name\n1,road\n")
    cfg = load_config(
        None,
        [
            f"store={tmp_path / 's'}",
            f"cities.a={small_corpus / 'signburg'}",
            f"cities.b={small_corpus / 'towerville'}",
            "segmenter.backend=ade20k-upernet",
            "segmenter.weights=random",
            f"segmenter.classes={classes}",
        ],
    )
    with pytest.raises(ConfigError, match="segmenter.classes: .*150 classes"):
        preflight(cfg)
