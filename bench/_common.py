"""Shared helpers for the benchmarks: timing, machine description, table printing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine() -> str:
    """One line naming the machine the numbers were taken on."""
    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor is enough
    except OSError:
        pass
    if "model name" in info:
        # a virtual machine's model name can be as bare as "AMD EPYC": family, model and
        # clock tell two hosts of one name apart (their rates here differed by ~2x)
        cpu = info["model name"]
        if "cpu family" in info:
            cpu += f" (family {info['cpu family']} model {info.get('model', '?')}"
            if "cpu MHz" in info:
                cpu += f", {float(info['cpu MHz']) / 1000:.1f} GHz"
            if "avx512f" in info.get("flags", "").split():
                cpu += ", AVX-512"
            cpu += ")"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {gpu}"
    )


def _once(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def time_it(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Median wall seconds of each function, run round-robin.

    Interleaving puts every contender under the same machine state (clock, caches,
    a neighbour's load), so ratios between them are fair even when absolute times drift.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(_once(fn))
    return {name: statistics.median(r) for name, r in runs.items()}


def print_table(header: list[str], rows: list[list[object]]) -> None:
    """A Markdown table (pastes into the README as is)."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))


# --- rows for bench/all.py -------------------------------------------------------------


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it (Linux /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, pp in parent.items():
            if pp == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def _status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/status in kB (kernel counters: cheap to read, unlike smaps)."""
    out = dict.fromkeys(keys, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def _tree_mb(pids: set[int]) -> float:
    """Private resident memory of every process, plus the largest shared-memory
    mapping once (Ray's object store is mapped by every worker; counting it per process
    would multiply it)."""
    fields = [_status_kb(p, ("RssAnon", "RssShmem")) for p in pids]
    return (sum(f["RssAnon"] for f in fields) + max(f["RssShmem"] for f in fields)) / 1024


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """Peak memory of a block, in MB (``peak_mb``).

    ``tree=False``: this process's peak resident memory (the kernel's high-water mark,
    reset on entry: no sampling thread to compete with the measured code).
    ``tree=True``: the peak over this process and all its descendants (Ray's processes
    and workers, when Ray was started here) of their private resident memory plus the
    shared object store once, sampled every ``every`` seconds by a thread from kernel
    counters (reading smaps for PSS cost ~10 ms per process: most of a core for a Ray
    tree, which slowed what it measured).

    Example:
        >>> with PeakMemory() as mem:
        ...     work()
        >>> mem.peak_mb
    """

    def __init__(self, tree: bool = False, every: float = 0.5) -> None:
        self.tree, self.every = tree, every
        self.peak_mb = 0.0

    def _sample(self) -> float:
        return _tree_mb(_descendants(os.getpid()))

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_mb = max(self.peak_mb, self._sample())

    def __enter__(self) -> PeakMemory:
        if not self.tree:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current resident size
            except OSError:
                self.tree = True  # no reset: fall back to sampling
        if self.tree:
            import threading

            self.peak_mb = self._sample()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tree:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self._sample())
        else:
            self.peak_mb = _hwm_mb()


def row(
    stage: str,
    case: str,
    rate: float,
    unit: str = "img/s",
    *,
    peak_mb: float | None = None,
    reference: str = "",
    ratio: float | None = None,
    target: float | None = None,
    note: str = "",
) -> dict:
    """One line of bench/all.py's table. ``ratio`` is how many times faster than the
    reference (higher is better); ``met`` is ``ratio >= target`` when there is a target."""
    return {
        "stage": stage,
        "case": case,
        "rate": rate,
        "unit": unit,
        "peak_mb": peak_mb,
        "reference": reference,
        "ratio": ratio,
        "target": target,
        "met": None if target is None or ratio is None else bool(ratio >= target),
        "note": note,
    }


ROW_PREFIX = "BENCH-ROW "


def emit(rows: list[dict]) -> None:
    """Print rows as JSON lines for bench/all.py (which reads them from our stdout)."""
    import json

    for r in rows:
        print(ROW_PREFIX + json.dumps(r), flush=True)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}" if x < 10 else f"{x:.1f}"
