"""Running a study: the stages in order, each skipped when its record is up to date."""

from __future__ import annotations

import time
from collections.abc import Callable

from citylens.config import StudyConfig, dump_config
from citylens.lease import Lease
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store

__all__ = ["STAGES", "Interrupted", "check_stages", "run_study"]


def _stages() -> dict[str, Callable[[Context], StageResult]]:
    from citylens.pipeline.ablate import run_ablate
    from citylens.pipeline.analyze import run_analyze
    from citylens.pipeline.baseline import run_baseline
    from citylens.pipeline.explain import run_explain
    from citylens.pipeline.ingest import run_ingest
    from citylens.pipeline.overlap import run_overlap
    from citylens.pipeline.report import run_report
    from citylens.pipeline.segment import run_segment
    from citylens.pipeline.train import run_train

    return {
        "ingest": run_ingest,
        "baseline": run_baseline,
        "train": run_train,
        "explain": run_explain,
        "segment": run_segment,
        "ablate": run_ablate,
        "overlap": run_overlap,
        "analyze": run_analyze,
        "report": run_report,
    }


STAGES = (
    "ingest",
    "baseline",
    "train",
    "explain",
    "segment",
    "ablate",
    "overlap",
    "analyze",
    "report",
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) while a stage ran.

    Attributes:
        stage: The stage that was running (None between stages).
    """

    def __init__(self, stage: str | None) -> None:
        super().__init__(stage)
        self.stage = stage


def check_stages(stages: list[str] | None) -> list[str]:
    """The stages asked for, in :data:`STAGES` order of the request.

    Raises:
        ValueError: naming unknown stages and the known ones.
    """
    wanted = list(stages or STAGES)
    unknown = [s for s in wanted if s not in STAGES]
    if unknown or not wanted:
        raise ValueError(
            f"unknown stage(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"stages are {', '.join(STAGES)}"
        )
    return wanted


def run_study(
    cfg: StudyConfig,
    stages: list[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] = print,
    wait: float = 0.0,
    lease: Lease | None = None,
) -> list[StageResult]:
    """Run (or skip) the study's stages in order, holding the store's lease.

    Ray is joined or started only when a stage has work to do: a study that is up to
    date runs no Ray at all.

    Args:
        cfg: A validated study config.
        stages: Subset of :data:`STAGES` to run (default: all, in order).
        force: Re-run stages even when their records are up to date.
        progress: Where progress lines go.
        wait: Seconds to wait for another run holding the store (0: stop at once).
        lease: The lease to take (default: one with the standard heartbeat).

    Returns:
        One :class:`StageResult` per stage asked for.

    Raises:
        StoreBusy: another run holds the store after ``wait`` seconds.
        Interrupted: Ctrl-C; the stage it stopped is named, and a re-run resumes.
    """
    wanted = check_stages(stages)
    store = Store(cfg.store, cfg.run.storage_options)
    lease = lease or Lease(store, cfg.name)
    lease.acquire(wait, progress=progress)
    stage = None
    try:
        store.write_text("study.yaml", dump_config(cfg))
        ctx = Context(cfg, store, force, progress, lease)  # Ray starts when a stage needs it
        impl = _stages()
        results = []
        for stage in STAGES:
            if stage not in wanted:
                continue
            t = time.time()
            progress(f"── {stage}")
            res = impl[stage](ctx)
            if res.status == "skipped":
                progress(f"{stage}: up to date, skipped")
            else:
                progress(f"{stage}: done in {time.time() - t:.1f} s")
            results.append(res)
        return results
    except KeyboardInterrupt:
        raise Interrupted(stage) from None
    finally:
        lease.release()
