import dataclasses

import pytest
import yaml

from citylens.config import ConfigError, StudyConfig, dump_config, load_config


def test_defaults_are_the_papers_and_need_no_file():
    cfg = load_config()
    assert cfg.models.archs == ("vgg11", "resnet18", "simple", "simpler")
    assert cfg.models.seeds == (0, 1)
    t = cfg.train
    assert (t.lr, t.betas, t.eps, t.lr_step, t.lr_gamma, t.input_size) == (
        1e-4,
        (0.9, 0.999),
        1e-8,
        10,
        0.1,
        224,
    )
    assert cfg.split.ratios == (0.6, 0.2, 0.2)
    assert cfg.explain.thetas == (0.6,) and cfg.explain.target == "true"
    assert cfg.analysis.pca == (50, 0.9) and cfg.analysis.perplexity == 30
    assert cfg.analysis.min_mean_pixels == 100 and cfg.analysis.mosaic == 500
    assert cfg.cities == {}  # the synthetic study
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "tokyo-vs-pittsburgh",
                "cities": {
                    "tokyo": {"source": "/data/tokyo", "place_regex": "^(?P<place>.+)_\\d+_\\d+$"},
                    "pittsburgh": "/data/pitt",
                },
                "train": {"epochs": 3},
            }
        )
    )
    cfg = load_config(
        path,
        [
            "train.epochs=5",
            "models.archs=[vgg11,simple]",
            "explain.thetas=[0.5,0.7]",
            "cities.pittsburgh.labels=/l",
        ],
    )
    assert cfg.train.epochs == 5
    assert cfg.models.archs == ("vgg11", "simple")
    assert cfg.explain.thetas == (0.5, 0.7)
    assert cfg.cities["tokyo"].place_regex.startswith("^(?P<place>")
    assert cfg.cities["pittsburgh"].source == "/data/pitt"
    assert cfg.cities["pittsburgh"].labels == "/l"
    again = load_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "override,field",
    [
        ("models.archs=[vgg11,alexnet]", "models.archs[1]: unknown architecture 'alexnet'"),
        ("cities.only=/x", "cities: a study needs at least two cities"),
        ("explain.thetas=[0.6,1.0]", "explain.thetas[1]: θ must be in (0, 1)"),
        ("explain.thetas=[0]", "explain.thetas[0]"),
        ("train.epochs=zero", "train.epochs: expected an integer"),
        ("train.epochs=0", "train.epochs: must be ≥ 1"),
        ("train.checkpoint_every=-1", "train.checkpoint_every: must be ≥ 0"),
        ("trian.epochs=3", "trian: unknown field"),
        ("train.input_size=40", "train.input_size: simple: input size 40 px"),
        ("analysis.pca=[50,1.5]", "analysis.pca[1]"),
        ("segmenter.backend=deeplab", "segmenter.backend: unknown segmenter 'deeplab'"),
        ("models.seeds=[0,0]", "models.seeds[1]: 0 is listed twice"),
        ("split.ratios=[0.6,0.4]", "split.ratios: expected 3 values"),
        ("explain.target=random", "explain.target: must be 'true' or 'pred'"),
        ("name=my study", "name:"),
        ("models.init_weights.simple=/w.pt", "models.init_weights.simple"),
        ("train.lr=-1", "train.lr: must be positive"),
        ("cities.a.place_regex=([", "cities.a.place_regex: invalid regex"),
        ("nonsense", "overrides look like key=value"),
        ("segmenter.backend=ade20k-ppm", "segmenter.weights: ade20k-ppm needs weights"),
        ("segmenter.scales=[300,8]", "segmenter.scales[1]: must be ≥ 16 px"),
        ("segmenter.max_size=200", "segmenter.max_size: must be ≥ the largest scale (600)"),
        ("segmenter.precision=int8", "segmenter.precision: must be fp32, bf16 or fp16"),
        ("explain.decode_on=tpu", "explain.decode_on: must be cpu or gpu"),
        ("run.gpus=-1", "run.gpus: must be ≥ 0"),
        ("run.actors=0", "run.actors: must be ≥ 1"),
        ("explain.methods=[gradcam,gradcamm]", "explain.methods[1]: 'gradcamm': the method"),
        ("explain.methods=[hirescam@first]", "explain.methods[0]: 'hirescam@first': write"),
        ("explain.methods=[layercam,layercam]", "explain.methods[1]: 'layercam' is listed twice"),
    ],
)
def test_bad_values_name_the_field(override, field):
    base = ["cities.a=/x", "cities.b=/y"] if override.startswith("cities.a.") else []
    with pytest.raises(ConfigError) as err:
        load_config(None, base + [override])
    assert field in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_storage_options_never_serialised():
    cfg = load_config(
        None, ["run.storage_options.secret=hunter2", "run.storage_options.endpoint_url=http://x"]
    )
    text = dump_config(cfg)
    assert "hunter2" not in text and "<set>" in text
    assert isinstance(cfg, StudyConfig)


def _alias_bomb(levels: int = 9) -> str:
    """Nine levels of ten-fold aliases: 600 bytes of YAML, 10^9 values expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "run:\n  storage_options:\n    " + "\n    ".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    import time

    study = tmp_path / "bomb.yaml"
    study.write_text(_alias_bomb())
    t = time.time()
    with pytest.raises(ConfigError, match=r"bomb.yaml: expands to [\d,]+ values"):
        load_config(study)
    assert time.time() - t < 5
    ten = ", ".join(["1"] * 10)
    value = (
        f"{{a: &a [{ten}], b: &b [{', '.join(['*a'] * 10)}], c: &c [{', '.join(['*b'] * 10)}], "
        f"d: [{', '.join(['*c'] * 100)}]}}"
    )
    # 1 mapping + 4 keys + a (11) + b (111) + c (1,111) + d (1 + 100 × 1,111), by hand
    with pytest.raises(ConfigError, match=r"run.storage_options: expands to 112,339 values"):
        load_config(None, [f"run.storage_options={value}"])


def test_a_recursive_alias_is_refused(tmp_path):
    study = tmp_path / "loop.yaml"
    study.write_text("run:\n  storage_options: &o {x: *o}\n")
    with pytest.raises(
        ConfigError, match="loop.yaml: a YAML alias refers to a value that contains"
    ):
        load_config(study)


def test_a_few_aliases_stay_allowed(tmp_path):
    study = tmp_path / "ok.yaml"
    study.write_text(
        "cities:\n"
        "  a: {source: /x/a, place_regex: &re '^(?P<place>.+)_\\d+$'}\n"
        "  b: {source: /x/b, place_regex: *re}\n"
    )
    cfg = load_config(study)
    assert cfg.cities["a"].place_regex == cfg.cities["b"].place_regex == r"^(?P<place>.+)_\d+$"


def test_a_study_that_is_not_utf8_text_or_is_a_folder_is_named(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)"
    ):
        load_config(latin)
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: x\n" + b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="over 1 MB"):
        load_config(big)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.input_size=100000", "train.input_size: at most 1,024 px"),
        ("train.epochs=10000000", "train.epochs: at most"),
        ("explain.batch_size=100000000", "explain.batch_size: at most"),
        ("synthetic.size=50000", "synthetic.size: at most"),
        ("segmenter.max_size=100000", "segmenter.max_size: at most"),
        ("analysis.mosaic=10000000", "analysis.mosaic: at most"),
        ("run.storage_options.token=" + "x" * 20000, "run.storage_options: at most 16,384"),
        ("name=" + "n" * 5000, "name: 5000 characters"),
    ],
)
def test_absurd_sizes_are_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert field in str(err.value)


def test_added_methods_resolve_per_architecture_without_the_studys_own_or_repeats():
    from citylens.config.schema import ExplainConfig

    e = ExplainConfig(
        method="gradcam",
        layer="last",
        methods=(
            "gradcam++",
            "gradcam@previous",
            "gradcam@last",
            "hirescam@previous",
            "gradcam++@last",
        ),
    )
    two = ("layer3", "layer4")
    # gradcam@last is the study's own; gradcam++ (at explain.layer) = gradcam++@last: once
    assert e.compared_for("resnet18", two) == [
        ("gradcam++", "layer4"),
        ("gradcam", "layer3"),
        ("hirescam", "layer3"),
    ]
    # one layer: previous is the last, so gradcam@previous is the study's own
    assert e.compared_for("one", ("conv",)) == [("gradcam++", "conv"), ("hirescam", "conv")]
    # entries without a layer follow explain.layer and layer_per_arch, like the own one
    e2 = ExplainConfig(layer="previous", layer_per_arch={"vgg11": "block5"}, methods=("layercam",))
    assert e2.compared_for("resnet18", two) == [("layercam", "layer3")]
    assert e2.compared_for("vgg11", ("block4", "block5")) == [("layercam", "block5")]
    assert ExplainConfig().compared_for("resnet18", two) == []


def test_annotations_are_one_file_a_list_or_none(tmp_path):
    for name in ("kim.csv", "lee.csv"):
        (tmp_path / name).write_text("image,label1\na.jpg,sky\n")
    kim, lee = str(tmp_path / "kim.csv"), str(tmp_path / "lee.csv")
    assert load_config(None, [f"analysis.annotations={kim}"]).analysis.annotations == (kim,)
    both = load_config(None, [f"analysis.annotations=[{kim},{lee}]"])
    assert both.analysis.annotations == (kim, lee)
    # a study written when the field was one optional file
    assert load_config(None, ["analysis.annotations=null"]).analysis.annotations == ()


def test_train_precision_is_fp32_or_bf16():
    assert load_config().train.precision == "fp32"
    assert load_config(None, ["train.precision=bf16"]).train.precision == "bf16"
    with pytest.raises(ConfigError, match="train.precision: must be fp32 or bf16"):
        load_config(None, ["train.precision=fp16"])
