"""``citylens compare`` on two stores' analysis tables; the page in headless Chromium."""

from __future__ import annotations

import pyarrow as pa

from citylens.cli import main
from citylens.config import dump_config, load_config
from citylens.storage import Store
from citylens.tables import ACCURACY, AR_KINDS, OBJECT_MEANS


def _study(path, name, acc, car_rp, cities=("signburg", "towerville"), model_key="k0"):
    """A store with what ``compare`` reads: study.yaml, the ingest and analyze records."""
    store = Store(str(path))
    store.write_text("study.yaml", dump_config(load_config(None, [f"name={name}"])))
    store.commit("ingest", {"cities": list(cities)})
    store.commit("train", {"models": {"simple-s0": {"key": model_key}}})
    folder = "analyze/r1"
    acc_rows = [
        {
            "model": "simple-s0",
            "arch": "simple",
            "seed": 0,
            "acc": acc,
            "ci_low": acc - 0.05,
            "ci_high": acc + 0.05,
            "n_places": 10,
        }
    ]
    store.write_table(f"{folder}/accuracy.parquet", pa.Table.from_pylist(acc_rows, schema=ACCURACY))
    kinds = [{"kind": "seeds", "pairs": 1, "mean_ar": 0.2, "ci_low": 0.15, "ci_high": 0.25}]
    store.write_table(f"{folder}/ar_kinds.parquet", pa.Table.from_pylist(kinds, schema=AR_KINDS))
    means = [
        {
            "scope": "models",
            "city": c,
            "theta": 0.6,
            "class": 20,
            "name": "car<b>",
            "models": 1,
            "r_p": car_rp if c == "towerville" else 0.3,
            "ci_low": (car_rp if c == "towerville" else 0.3) - 0.02,
            "ci_high": (car_rp if c == "towerville" else 0.3) + 0.02,
            "selected": True,
        }
        for c in cities
    ]
    store.write_table(
        f"{folder}/object_means.parquet", pa.Table.from_pylist(means, schema=OBJECT_MEANS)
    )
    store.commit("analyze", {"folder": folder})
    return store


def test_compare_writes_a_page_that_names_what_changed(tmp_path, capsys, dump_dom):
    a = _study(tmp_path / "a", "period-1", 0.80, 0.40)
    b = _study(tmp_path / "b", "period-2", 0.82, 0.70)
    out = tmp_path / "compare.html"
    assert main(["compare", a.uri, b.uri, "--out", str(out)]) == 0
    text = out.read_text()
    assert "http://" not in text and "https://" not in text  # loads nothing
    assert "car&lt;b&gt;" in text and "car<b>" not in text  # names from a study are escaped
    dom = dump_dom(out)
    assert "period-1 vs period-2" in dom
    # accuracy 0.80 → 0.82: ±0.071 includes 0; towerville's car 0.40 → 0.70: settled
    assert "simple-s0: 0.800 → 0.820 (+0.020" in dom and "within noise" in dom
    assert "towerville: car&lt;b&gt; 0.400 → 0.700 (+0.300 [+0.272, +0.328]; settled)" in dom
    assert "the same trained models" in dom


def test_models_trained_anew_are_not_judged_on_one_models_accuracy(tmp_path):
    a = _study(tmp_path / "a", "a", 0.80, 0.40)
    b = _study(tmp_path / "b", "b", 0.95, 0.70, model_key="retrained")
    out = tmp_path / "c.html"
    assert main(["compare", a.uri, b.uri, "--out", str(out)]) == 0
    text = out.read_text()
    assert "simple-s0: 0.800 → 0.950 (+0.150 [" in text and "not judged)" in text
    assert "trained their own models" in text


def test_studies_without_a_shared_city_or_analysis_are_refused(tmp_path, capsys):
    a = _study(tmp_path / "a", "a", 0.8, 0.4)
    b = _study(tmp_path / "b", "b", 0.8, 0.4, cities=("rome", "oslo"))
    assert main(["compare", a.uri, b.uri, "--out", str(tmp_path / "x.html")]) == 2
    assert "share no city" in capsys.readouterr().err
    empty = Store(str(tmp_path / "empty"))
    assert main(["compare", a.uri, empty.uri, "--out", str(tmp_path / "y.html")]) == 2
    assert "no analysis in this store" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_a_run_with_compare_with_writes_the_page_into_its_store(tmp_path, capsys):
    from citylens.cli import _write_comparison

    a = _study(tmp_path / "a", "last-week", 0.80, 0.40)
    b = _study(tmp_path / "b", "this-week", 0.82, 0.70)
    cfg = load_config(None, [f"store={b.uri}"])
    assert _write_comparison(a.uri, cfg) == 0
    page = b.read_bytes("compare.html").decode()
    assert "last-week vs this-week" in page
    assert "comparison with" in capsys.readouterr().out
    # a previous store that cannot be compared: the run's own result stands, exit 2
    assert _write_comparison(str(tmp_path / "nothing"), cfg) == 2
    assert "the study ran, but no comparison" in capsys.readouterr().err
