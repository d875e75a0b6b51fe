"""keep_freed_memory: a worker's later batches reuse pages instead of faulting them in."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, statistics, sys
import torch
from citylens.allocator import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.set_num_threads(1)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1)
).eval()
x = torch.randn(8, 3, 256, 256)  # 67 MB activations: above glibc's 32 MB mmap cap
faults = []
with torch.no_grad():
    for _ in range(2):  # warm-up: the heap grows towards its high-water mark
        net(x)
    for _ in range(5):  # five more batches, as a worker's next batches
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(ok, int(statistics.median(faults)))
"""


def _faults(mode: str) -> tuple[str, int]:
    """(whether mallopt took, median page faults of one batch after warm-up)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_large_blocks_are_reused_without_page_faults():
    ok, kept = _faults("keep")
    if ok != "True":
        pytest.skip("no glibc mallopt in this C library")
    _, default = _faults("default")
    # glibc's default: munmap on free, so each batch's activations fault in again
    assert default >= 2000
    # kept: later batches find their pages mapped. The median, since the heap may still
    # grow once after warm-up where a small block splits the free space (seen in CI:
    # one batch faulted two fresh 64 MB activations, 32768 pages)
    assert kept < default // 10


def test_returns_false_without_glibc(monkeypatch):
    from citylens import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False


def _faults_in_ray_data_thread(runtime_env: dict | None) -> int:
    """Median page faults of a conv batch run by a Ray Data actor, in its UDF thread."""
    import ray

    class Conv:
        def __init__(self) -> None:
            import torch

            torch.set_num_threads(1)
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.Conv2d(32, 32, 3, padding=1)
            ).eval()
            self.x = torch.randn(8, 3, 256, 256)  # 67 MB activations

        def __call__(self, batch: dict) -> dict:
            import resource
            import statistics
            import threading

            import torch

            assert threading.current_thread() is not threading.main_thread()
            faults = []
            with torch.no_grad():
                self.net(self.x)  # warm-up
                self.net(self.x)
                for _ in range(5):
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    self.net(self.x)
                    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            batch["faults"] = [int(statistics.median(faults))]
            return batch

    kw = {"runtime_env": runtime_env} if runtime_env else {}
    ds = ray.data.range(1).map_batches(
        Conv, compute=ray.data.ActorPoolStrategy(size=1), batch_size=1, **kw
    )
    return int(ds.take_all()[0]["faults"])


@pytest.mark.slow  # 29 s: a Ray Data actor pool
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_ray_data_actor_threads_reuse_pages_with_the_worker_runtime_env():
    import ray

    from citylens.allocator import worker_runtime_env
    from citylens.pipeline.cluster import start_local

    start_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        default = _faults_in_ray_data_thread(None)
        kept = _faults_in_ray_data_thread(worker_runtime_env())
    finally:
        ray.shutdown()
    assert default >= 2000  # per-thread arenas mmap each activation afresh
    assert kept < default // 10
