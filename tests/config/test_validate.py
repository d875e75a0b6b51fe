import pytest

from citylens.config import ConfigError, load_config
from citylens.config.validate import preflight


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


def _cities(tmp_path, a, b, *extra):
    return load_config(None, [f"store={tmp_path / 's'}", f"cities.a={a}", f"cities.b={b}", *extra])


def test_two_cities_on_one_folder_or_nested_folders_are_refused(tmp_path, small_corpus):
    town = small_corpus / "signburg"
    with pytest.raises(ConfigError, match="cities.b.source: .* is the same folder as cities.a"):
        _cities(tmp_path, town, f"{town}/")
    with pytest.raises(ConfigError, match="cities.b.source: .* is inside cities.a.source"):
        _cities(tmp_path, small_corpus, town)
    with pytest.raises(ConfigError, match="cities.b.source: .* contains cities.a.source"):
        _cities(tmp_path, town, small_corpus)
    with pytest.raises(ConfigError, match="is inside cities.a.source"):
        _cities(tmp_path, "s3://bucket/cities", "s3://bucket/cities/b")
    assert _cities(
        tmp_path, "s3://bucket/city", "s3://bucket/city-b"
    ).cities  # a prefix, not a folder


def test_a_link_to_another_citys_folder_is_refused_before_ray(tmp_path, small_corpus):
    (tmp_path / "alias").symlink_to(small_corpus / "signburg", target_is_directory=True)
    cfg = _cities(tmp_path, small_corpus / "signburg", tmp_path / "alias")  # names differ
    with pytest.raises(ConfigError, match="is the same folder as"):
        preflight(cfg)
    assert not (tmp_path / "s").exists()  # nothing written


def test_cities_with_manifests_may_share_a_root(tmp_path, small_corpus):
    for c in ("a", "b"):
        (tmp_path / f"{c}.txt").write_text("x_0.png\n")
    cfg = _cities(
        tmp_path,
        small_corpus,
        small_corpus,
        f"cities.a.manifest={tmp_path / 'a.txt'}",
        f"cities.b.manifest={tmp_path / 'b.txt'}",
    )
    assert cfg.cities["a"].source == cfg.cities["b"].source


def test_initial_weights_are_checked_before_ray(tmp_path, small_corpus):
    import torch
    import torchvision

    towns = (small_corpus / "signburg", small_corpus / "towerville")
    missing = tmp_path / "nope.pt"
    with pytest.raises(
        ConfigError, match=f"models.init_weights.resnet18: {missing} does not exist"
    ):
        preflight(_cities(tmp_path, *towns, f"models.init_weights.resnet18={missing}"))

    net = torchvision.models.resnet18(num_classes=1000)
    whole = tmp_path / "whole.pt"
    torch.save(net, whole)  # a pickled module, not a state_dict
    with pytest.raises(ConfigError) as err:
        preflight(_cities(tmp_path, *towns, f"models.init_weights.resnet18={whole}"))
    text = str(err.value)
    assert text.startswith(f"models.init_weights.resnet18: {whole}: not a plain state_dict")
    assert "torchvision.models.resnet.ResNet" in text and "refused it for safety" in text
    assert "weights_only" not in text  # never the advice to turn the check off

    state = net.state_dict()
    del state["layer2.0.conv1.weight"]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(ConfigError, match=r"resnet18: .*missing=\['layer2.0.conv1.weight'\]"):
        preflight(_cities(tmp_path, *towns, f"models.init_weights.resnet18={partial}"))
    good = tmp_path / "good.pt"
    torch.save(net.state_dict(), good)
    preflight(_cities(tmp_path, *towns, f"models.init_weights.resnet18={good}"))


def test_segmenter_weights_that_are_pickled_code_are_refused_before_ray(tmp_path, small_corpus):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    folder = tmp_path / "csail"
    folder.mkdir()
    for part in ("encoder", "decoder"):
        torch.save({"w": torch.zeros(1), "p": Payload()}, folder / f"{part}_epoch_20.pth")
    cfg = _cities(
        tmp_path,
        small_corpus / "signburg",
        small_corpus / "towerville",
        "segmenter.backend=ade20k-ppm",
        f"segmenter.weights={folder}",
    )
    with pytest.raises(
        ConfigError, match=r"segmenter.weights: .*encoder_epoch_20.pth: not a plain"
    ):
        preflight(cfg)
