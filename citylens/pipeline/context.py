"""What every stage is given, and the skip-if-up-to-date rule.

A stage's *key* is a digest of what it consumed (its upstream stages' output digests)
and its settings. A stage whose committed record has the same key is up to date and is
skipped; otherwise it runs in a fresh folder and commits a new record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from citylens import __version__
from citylens.config import StudyConfig
from citylens.lease import Lease
from citylens.storage import Store, digest, new_run_id
from citylens.tables import ERRORS

__all__ = ["FORMAT", "PROCESSED", "Context", "StageResult"]

FORMAT = 1  # bump when a table's layout or a stage's meaning changes
# What a stage's inputs become when processed (the rest are its errors): the count in
# its record's ``counts`` beside ``inputs`` and ``errors``.
PROCESSED = {"overlap": "explanations"}  # every other stage: "images"


@dataclass
class StageResult:
    """Outcome of one stage: ``ran`` or ``skipped``, with its record."""

    stage: str
    status: str
    record: dict = field(default_factory=dict)


@dataclass
class Context:
    """A study being run: its config, store and progress sink."""

    cfg: StudyConfig
    store: Store
    force: bool = False
    progress: Callable[[str], None] = print
    lease: Lease | None = None  # the store's lease this run holds (checked before commits)

    def upstream(self, *stages: str) -> dict[str, str]:
        """Output digests of committed upstream stages (raises if one never ran)."""
        out = {}
        for stage in stages:
            rec = self.store.record(stage)
            if rec is None:
                raise RuntimeError(f"stage {stage!r} has not run yet; run it first")
            out[stage] = rec["output"]
        return out

    def key(self, stage: str, upstream: dict[str, str], settings: dict) -> str:
        """A stage's key: a digest of its name, the table format, its inputs and settings."""
        return digest(
            {"stage": stage, "format": FORMAT, "upstream": upstream, "settings": settings}
        )

    def ray(self) -> None:
        """Join or start Ray for a stage that is about to use it (once per run).

        Stages call this only after their skip check, so a study that is up to date
        never starts Ray (a local one costs 10 s, 50 s on a loaded machine).
        """
        import ray

        from citylens.pipeline import cluster, logs

        started = ray.is_initialized()
        cluster.connect(self.cfg)
        if not started and logs.is_quiet() and (line := logs.session_logs_line()):
            self.progress(line)

    def up_to_date(self, stage: str, key: str) -> dict | None:
        """The stage's record when it matches ``key`` (and --force is off), else None."""
        if self.force:
            return None
        rec = self.store.record(stage)
        if rec is not None and rec.get("key") == key:
            return rec
        return None

    def begin(self, stage: str) -> tuple[str, float]:
        """A fresh run folder ``<stage>/<run id>`` for a stage about to run."""
        return f"{stage.split('/')[0]}/{new_run_id()}", time.time()

    def resume(self, stage: str, key: str) -> tuple[str, float, bool]:
        """A run folder for a stage whose work is kept batch by batch (explain, segment).

        If an earlier attempt with the same key was interrupted (the driver died), its
        folder is returned so the stage can skip the batches already written; otherwise a
        fresh one, remembered in ``stages/<stage>.pending.json`` until the stage commits.

        Returns:
            ``(folder, start time, resumed)``.
        """
        pending = f"stages/{stage}.pending.json"
        if not self.force and self.store.exists(pending):
            p = self.store.read_json(pending)
            if p.get("key") == key and self.store.exists(p["folder"]):
                return p["folder"], time.time(), True
        folder, started = self.begin(stage)
        self.store.write_json(pending, {"key": key, "folder": folder})
        return folder, started, False

    def finish(
        self,
        stage: str,
        key: str,
        folder: str,
        started: float,
        output: str | None = None,
        **extra,
    ) -> dict:
        """Commit a stage and remove its older run folders.

        Raises:
            RuntimeError: the stage's ``counts`` break ``inputs = processed + errors``
                (nothing is committed: an input went missing without a record).
        """
        counts = extra.get("counts")
        if counts is not None and "/" not in stage:
            done = PROCESSED.get(stage, "images")
            if counts.get("inputs") != counts.get(done, -1) + counts.get("errors", -1):
                raise RuntimeError(
                    f"{stage}: inputs = {counts.get('inputs')} but {done} = "
                    f"{counts.get(done)} and errors = {counts.get('errors')}; not committed"
                )
        if self.lease is not None:
            self.lease.check()  # never commit (and prune) on a store another run now holds
        record = {
            "key": key,
            "output": output or key,
            "folder": folder,
            "seconds": round(time.time() - started, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "citylens": __version__,
            **extra,
        }
        self.store.commit(stage, record)
        self.store.rm(f"stages/{stage}.pending.json")
        parent, run = folder.rsplit("/", 1)
        if "/" not in stage:  # per-item stages (train/<model>) share folders; leave them
            self.store.prune(parent, keep=[run])
        return record

    def errors(self, stage: str) -> pa.Table:
        """The errors table a committed stage wrote (empty if none)."""
        rec = self.store.record(stage)
        if rec is None:
            return ERRORS.empty_table()
        return self.store.read_table(f"{rec['folder']}/errors", schema=ERRORS)
