import json

import pytest
import torch

from citylens.train import (
    TensorBatches,
    TrainSettings,
    accuracy,
    fit,
    load_checkpoint,
    save_checkpoint,
)


def _toy(n=24, size=96, seed=0):
    """Two 'cities': a bright square top-left vs bottom-right, on noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 2
    for i in range(n):
        s = slice(8, 40) if y[i] == 0 else slice(size - 40, size - 8)
        x[i, :, s, s] = 230
    return x, y


def _fit(seed, epochs=2, precision="fp32", **kw):
    x, y = _toy()
    xv, yv = _toy(8, seed=1)
    return fit(
        "simple",
        seed,
        num_classes=2,
        input_size=96,
        train=TensorBatches(x, y, 8, shuffle=True, seed=seed).epoch,
        val=lambda: TensorBatches(xv, yv, 8),
        test=lambda: TensorBatches(xv, yv, 8),
        settings=TrainSettings(epochs=epochs, **kw),
        precision=precision,
    )


def test_training_is_reproducible_for_a_seed():
    a, b, c = _fit(0), _fit(0), _fit(1)
    assert a.history == b.history
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.history != c.history


def test_learning_rate_steps_and_result_fields():
    r = _fit(0, epochs=3, lr_step=1, lr_gamma=0.1)
    assert [row["lr"] for row in r.history] == pytest.approx([1e-4, 1e-5, 1e-6])
    assert 1 <= r.best_epoch <= 3
    assert r.val_acc == max(row["val_acc"] for row in r.history)
    assert 0.0 <= r.test_acc <= 1.0
    assert not r.model.training


def test_learns_an_easy_task():
    r = _fit(0, epochs=6, lr=1e-3)
    assert r.val_acc == 1.0


def test_checkpoint_roundtrip(tmp_path):
    r = _fit(0, epochs=1)
    save_checkpoint(str(tmp_path / "simple-s0"), r.model, {"seed": 0, "cities": ["a", "b"]})
    meta = json.loads((tmp_path / "simple-s0/meta.json").read_text())
    assert meta["arch"] == "simple" and meta["cam_size"] == [2, 2]
    assert meta["target_layer"] == "conv4" and meta["cities"] == ["a", "b"]
    assert meta["layers"] == {"conv3": [16, 16], "conv4": [2, 2]}  # at 96 px
    model, meta2 = load_checkpoint(str(tmp_path / "simple-s0"))
    x, y = _toy(4)
    assert accuracy(model, [(x, y)]) == accuracy(r.model, [(x, y)])
    with torch.no_grad():
        torch.testing.assert_close(model(x.float()), r.model(x.float()))


class _Crash(Exception):
    pass


@pytest.mark.parametrize(
    "arch,size",
    [("simple", 96), pytest.param("vgg11", 32, marks=pytest.mark.slow)],  # vgg11: dropout
)
def test_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path, arch, size):
    x, y = _toy(size=size)
    xv, yv = _toy(8, size=size, seed=1)
    settings = TrainSettings(epochs=4, lr_step=2, lr=1e-3)

    def run(on_state=None, resume=None):
        return fit(
            arch,
            3,
            num_classes=2,
            input_size=size,
            train=TensorBatches(x, y, 8, shuffle=True, seed=3).epoch,
            val=lambda: TensorBatches(xv, yv, 8),
            test=lambda: TensorBatches(xv, yv, 8),
            settings=settings,
            on_state=on_state,
            resume=resume,
        )

    whole = run()
    path = tmp_path / "state.pt"

    def save_then_crash(state):
        torch.save(state, path)
        if state["epoch"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        run(on_state=save_then_crash)
    state = torch.load(path, weights_only=True)  # plain tensors and numbers only
    assert state["epoch"] == 2 and len(state["history"]) == 2
    resumed = run(resume=state)
    assert resumed.history == whole.history
    assert (resumed.best_epoch, resumed.val_acc, resumed.test_acc) == (
        whole.best_epoch,
        whole.val_acc,
        whole.test_acc,
    )
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_weights():
    seen = []

    def record(module, inputs, output):
        seen.append(output.dtype)

    from citylens.models import build_model

    model = build_model("simple", 2, 96)
    handle = model.register_forward_hook(record)
    from citylens.train import autocast

    with autocast("cpu", "bf16"):
        model(torch.zeros(2, 3, 96, 96))
    with autocast("cpu", "fp32"):
        model(torch.zeros(2, 3, 96, 96))
    handle.remove()
    assert seen == [torch.bfloat16, torch.float32]
    r = _fit(0, epochs=3, lr=1e-3, precision="bf16")
    assert all(p.dtype == torch.float32 for p in r.model.parameters())
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in r.history)
    assert r.history[-1]["loss"] < r.history[0]["loss"]  # it learns
    fp32 = _fit(0, epochs=3, lr=1e-3)
    assert r.history != fp32.history  # another numeric path, not fp32 relabelled
    with pytest.raises(ValueError, match="precision"):
        _fit(0, epochs=1, precision="fp16")
