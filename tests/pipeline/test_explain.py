"""The explain actor's precision check: reduced precision is kept only where the masks
agree with fp32 (run on the CPU, where autocast works too, only slower)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from citylens.cam import grad_cam
from citylens.data.images import normalize
from citylens.models import build_model
from citylens.pipeline.explain import CamWorker, explain_rows
from citylens.storage import Store
from citylens.train import save_checkpoint


def _worker(tmp_path, precision: str, tolerance: float) -> CamWorker:
    store = Store(str(tmp_path / "store"))
    torch.manual_seed(0)
    save_checkpoint(store.url("models/resnet18-s0"), build_model("resnet18", 2, 64), {"seed": 0})
    models = {"resnet18-s0": "models/resnet18-s0"}
    return CamWorker(store, models, "explain/r", "true", 1, precision, tolerance)


def _batch(n: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=gen), np.arange(n) % 2


def test_masks_too_far_from_fp32_fall_back_to_fp32(tmp_path, capsys):
    worker = _worker(tmp_path, "bf16", tolerance=1e-9)  # nothing passes this tolerance
    images, labels = _batch()
    worker._check_precision(images, labels)
    assert worker.precision == {"resnet18-s0": "fp32"}
    assert "explaining it in fp32" in capsys.readouterr().out
    # the fallen-back rows are exactly fp32 Grad-CAM
    model = worker.models["resnet18-s0"]
    rows = explain_rows("resnet18-s0", model, images, labels, list("ab"), ["c"] * 2, "true", "fp32")
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    ref = grad_cam(model, x, torch.as_tensor(labels))
    np.testing.assert_array_equal(np.asarray(rows["mask"], np.float32), ref.mask.flatten(1).numpy())


def test_masks_within_tolerance_keep_reduced_precision(tmp_path, capsys):
    worker = _worker(tmp_path, "bf16", tolerance=0.5)
    images, labels = _batch()
    worker._check_precision(images, labels)
    assert set(worker.precision.values()) == {"bf16"}
    assert worker.checked and capsys.readouterr().out == ""
    model = worker.models["resnet18-s0"]
    rows = explain_rows("resnet18-s0", model, images, labels, list("ab"), ["c"] * 2, "true", "bf16")
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    fp32 = grad_cam(model, x, torch.as_tensor(labels)).mask.flatten(1).numpy()
    got = np.asarray(rows["mask"], np.float32)
    assert not np.array_equal(got, fp32)  # it really ran in bf16
    assert np.abs(got - fp32).mean() < 0.5


def test_fp32_needs_no_check(tmp_path):
    worker = _worker(tmp_path, "fp32", tolerance=1e-2)
    assert worker.checked and set(worker.precision.values()) == {"fp32"}


def test_jpegs_decoded_in_the_actor_explain_like_jpegs_decoded_in_tasks(tmp_path, shared_data):
    """``pass_jpegs``: plain JPEGs travel encoded and the actor decodes them (here on its
    CPU, as nvJPEG would on a GPU); PNGs, rotated JPEGs and missing files take the task's
    path. Rows and errors equal the all-in-tasks path's."""
    import io

    import pyarrow as pa
    from PIL import Image

    from citylens.pipeline.decode import decode_batch

    photos = sorted((shared_data / "london_or_london").glob("*/*.jpg"))[:3]
    rotated = Image.Exif()
    rotated[0x0112] = 6
    buf = io.BytesIO()
    Image.open(photos[0]).crop((0, 0, 200, 150)).save(buf, "JPEG", exif=rotated)
    (tmp_path / "rotated.jpg").write_bytes(buf.getvalue())
    Image.open(photos[1]).save(tmp_path / "photo.png")
    uris = [str(p) for p in photos] + [
        str(tmp_path / "rotated.jpg"),
        str(tmp_path / "photo.png"),
        str(tmp_path / "gone.jpg"),
    ]
    rows = pa.table({"uri": uris, "city": ["a", "b"] * 3, "image_id": [f"i{k}" for k in range(6)]})
    worker = _worker(tmp_path, "fp32", 1e-2)
    tables = {}
    for pass_jpegs in (False, True):
        batch = decode_batch(rows, 64, ["a", "b"], {}, pass_jpegs=pass_jpegs)
        if pass_jpegs:  # the three photos travel encoded, the rest as pixels
            assert [j is not None for j in batch["jpeg"]] == [True] * 3 + [False] * 3
            assert not batch["image"][:3].any()
        worker.folder = f"explain/{pass_jpegs}"
        out = worker(batch)
        assert (out["images"][0], out["errors"][0]) == (5, 1)
        data = Store(str(tmp_path / "store")).read_table(f"explain/{pass_jpegs}/data")
        errors = Store(str(tmp_path / "store")).read_table(f"explain/{pass_jpegs}/errors")
        tables[pass_jpegs] = (data.sort_by("image_id"), errors.select(["uri", "kind"]))
    assert tables[True][0].equals(tables[False][0])
    assert tables[True][1].equals(tables[False][1])
    assert tables[True][1]["kind"].to_pylist() == ["unreadable"]


def test_a_read_only_batch_is_only_read(tmp_path, shared_data):
    """Ray Data hands the actor read-only views of its object store (zero-copy batches):
    explaining one leaves it as it was, even where JPEGs decoded in the actor are written
    into the pixels (on a copy); the rows equal a writable batch's."""
    import pyarrow as pa

    from citylens.pipeline.decode import decode_batch

    photos = sorted((shared_data / "london_or_london").glob("*/*.jpg"))[:2]
    rows = pa.table({"uri": [str(p) for p in photos], "city": ["a", "b"], "image_id": ["i0", "i1"]})
    worker = _worker(tmp_path, "fp32", 1e-2)
    tables = []
    for read_only in (False, True):
        batch = decode_batch(rows, 64, ["a", "b"], {}, pass_jpegs=True)
        before = batch["image"].copy()
        batch["image"].flags.writeable = not read_only
        worker.folder = f"explain/{read_only}"
        out = worker(batch)
        assert out["images"][0] == 2
        if read_only:
            np.testing.assert_array_equal(batch["image"], before)  # still the placeholders
        tables.append(Store(str(tmp_path / "store")).read_table(f"explain/{read_only}/data"))
    assert tables[0].sort_by("image_id").equals(tables[1].sort_by("image_id"))


READ_ONLY_PROBE = """
import warnings
import numpy as np
from citylens.pipeline.explain import _device_images

warnings.simplefilter("error")
a = np.zeros((2, 3, 4, 4), np.uint8)
a.flags.writeable = False
assert _device_images(a, "cpu", writes=False).data_ptr() == a.ctypes.data  # only read
assert _device_images(a, "cpu", writes=True).data_ptr() != a.ctypes.data
"""


def _python(code: str, *args: str) -> str:
    """stdout of ``code`` run in a fresh interpreter (which must succeed)."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_wrapping_a_read_only_batch_warns_of_nothing():
    """torch warns once a process of a read-only array (into every actor's log); a fresh
    process shows it."""
    _python(READ_ONLY_PROBE)


DECODE_PROBE = """
import sys
import pyarrow as pa
import ray  # a Ray worker has it loaded
from citylens.pipeline.decode import decode_batch
from citylens.pipeline.explain import _decode_memory

photos, size = sys.argv[3:], int(sys.argv[2])
bs = int(sys.argv[1])
uris = (photos * bs)[:bs]
rows = pa.table({"uri": uris, "city": ["a"] * bs, "image_id": [str(k) for k in range(bs)]})
assert decode_batch(rows, size, ["a"], {})["ok"].all()
private = sum(  # the process's anonymous memory: what is its own in a pool of workers
    int(line.split()[1]) * 1024
    for line in open("/proc/self/smaps_rollup")
    if line.startswith("Anonymous:")
)
print(private, _decode_memory(bs))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("batch_size", "size"), [(32, 224), (128, 480)])
def test_decode_tasks_ask_ray_for_the_memory_their_worker_holds(shared_data, batch_size, size):
    """Ray Data warns when a task's worker used more than 4/5 of the memory it asked for
    (and a cluster could place more tasks than fit): a worker that decoded a batch of
    real photos stays within that."""
    photos = sorted(str(p) for p in (shared_data / "london_or_london").glob("*/*.jpg"))[:8]
    out = _python(DECODE_PROBE, str(batch_size), str(size), *photos)
    private, asked = map(int, out.split())
    assert private * 5 / 4 <= asked, f"{private / 2**20:.0f} MB used, {asked / 2**20:.0f} asked"


def _call_batch(images: torch.Tensor, labels: np.ndarray) -> dict:
    n = len(labels)
    return {
        "ok": np.ones(n, bool),
        "image_id": np.array([f"img{i}" for i in range(n)], dtype=object),
        "uri": np.array([f"/x/img{i}.jpg" for i in range(n)], dtype=object),
        "city": np.array(["a", "b"] * (n // 2), dtype=object),
        "label": labels,
        "error_kind": np.array([None] * n, dtype=object),
        "error_message": np.array([None] * n, dtype=object),
        "image": images.numpy(),
    }


@pytest.mark.parametrize("target", ["true", "pred"])
def test_added_methods_go_to_a_companion_shard_and_equal_a_direct_computation(tmp_path, target):
    from citylens.cam import explain_batch
    from citylens.pipeline.shards import companions
    from citylens.tables import EXPLANATIONS, METHOD_EXPLANATIONS

    store = Store(str(tmp_path / "store"))
    torch.manual_seed(0)
    save_checkpoint(store.url("models/resnet18-s0"), build_model("resnet18", 2, 64), {"seed": 0})
    compared = {"resnet18-s0": [["gradcam++", "layer4"], ["hirescam", "layer3"]]}
    worker = CamWorker(
        store, {"resnet18-s0": "models/resnet18-s0"}, "explain/r", target, 1, compared=compared
    )
    images, labels = _batch(4)
    out = worker(_call_batch(images, labels))
    name = out["shard"][0]
    assert companions(store, "explain/r") == [f"explain/r/methods/{name}"]
    own = store.read_table(f"explain/r/data/{name}", schema=EXPLANATIONS).to_pandas()
    added = store.read_table(f"explain/r/methods/{name}", schema=METHOD_EXPLANATIONS).to_pandas()
    assert len(added) == 2 * len(own) == 8
    model = worker.models["resnet18-s0"]
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    for method, layer in compared["resnet18-s0"]:
        mine = added[(added.method == method) & (added.layer == layer)].sort_values("image_id")
        # the same target as the study's own explanation: the true city, or its prediction
        np.testing.assert_array_equal(mine.target.to_numpy(), own.target.to_numpy())
        targets = torch.as_tensor(own.target.to_numpy().astype(np.int64))
        direct = explain_batch(model, x, targets, method, layer)
        assert (mine.cam_h == direct.mask.shape[1]).all() and (mine.arch == "resnet18").all()
        got = np.stack([np.asarray(m, np.float32) for m in mine["mask"]])
        np.testing.assert_allclose(got, direct.mask.flatten(1).numpy(), atol=1e-6)
    if target == "pred":
        np.testing.assert_array_equal(own.target.to_numpy(), own.pred.to_numpy())


def test_without_added_methods_no_companion_is_written(tmp_path):
    worker = _worker(tmp_path, "fp32", tolerance=1e-2)
    images, labels = _batch(2)
    worker(_call_batch(images, labels))
    assert worker.store.files("explain/r/methods") == []
    assert len(worker.store.files("explain/r/data")) == 1
