"""`citylens run` refuses what it cannot run before Ray starts or anything is written:
one line on stderr, a documented exit code, never a traceback."""

from __future__ import annotations

import pytest

from citylens.cli import main
from citylens.lease import Lease
from citylens.storage import Store


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["run", *argv])
    return code, capsys.readouterr().err


def _no_ray():
    import ray

    assert not ray.is_initialized()


def test_an_unknown_stage_is_refused_before_the_store_is_made(tmp_path, capsys):
    store = tmp_path / "never"
    code, err = _run(capsys, "demo", f"store={store}", "--stages", "ingest,trian")
    assert code == 2 and err.startswith("citylens: --stages: unknown stage(s) 'trian'")
    assert "stages are ingest, baseline, train" in err and "Traceback" not in err
    assert not store.exists()
    _no_ray()


@pytest.mark.parametrize("kind", ["folder", "latin-1", "binary"])
def test_a_study_file_that_is_no_yaml_text_is_one_line(tmp_path, capsys, kind):
    study = tmp_path / "study.yaml"
    if kind == "folder":
        study.mkdir()
    elif kind == "latin-1":
        study.write_bytes("name: café\n".encode("latin-1"))
    else:
        study.write_bytes(bytes(range(256)))
    code, err = _run(capsys, str(study))
    assert code == 2 and err.startswith(f"citylens: invalid study: study config {study} ")
    assert err.count("\n") == 1 and "Traceback" not in err
    _no_ray()


def test_an_alias_bomb_is_refused_in_a_second(tmp_path, capsys):
    import time

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    study = tmp_path / "bomb.yaml"
    study.write_text("run:\n  storage_options:\n    " + "\n    ".join(levels) + "\n")
    t = time.time()
    code, err = _run(capsys, str(study))
    assert code == 2 and "expands to" in err and time.time() - t < 5
    _no_ray()


def test_a_missing_init_weights_file_is_named_before_ray(tmp_path, capsys, small_corpus):
    code, err = _run(
        capsys,
        "demo",
        f"store={tmp_path / 's'}",
        f"cities.a={small_corpus / 'signburg'}",
        f"cities.b={small_corpus / 'towerville'}",
        f"models.init_weights.vgg11={tmp_path / 'vgg11.pth'}",
    )
    assert code == 2 and err == (
        f"citylens: invalid study: models.init_weights.vgg11: {tmp_path / 'vgg11.pth'} "
        "does not exist\n"
    )
    assert not (tmp_path / "s").exists()
    _no_ray()


def test_a_store_held_by_another_run_is_refused_naming_it(tmp_path, capsys, small_corpus):
    store = tmp_path / "s"
    holder = Lease(Store(str(store)), "the-cron-run")
    holder.acquire()
    try:
        code, err = _run(
            capsys,
            "demo",
            f"store={store}",
            f"cities.a={small_corpus / 'signburg'}",
            f"cities.b={small_corpus / 'towerville'}",
        )
    finally:
        holder.release()
    assert code == 4 and err.startswith(
        f"citylens: store {store} is in use by study 'the-cron-run'"
    )
    assert "--wait" in err and err.count("\n") == 1
    assert not (store / "study.yaml").exists()  # the second run wrote nothing
    _no_ray()
