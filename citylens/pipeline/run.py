"""Running a study: the stages in order, each skipped when its record is up to date."""

from __future__ import annotations

import time
from collections.abc import Callable

from citylens.config import StudyConfig, dump_config
from citylens.pipeline import cluster
from citylens.pipeline.context import Context, StageResult
from citylens.storage import Store

__all__ = ["STAGES", "run_study"]


def _stages() -> dict[str, Callable[[Context], StageResult]]:
    from citylens.pipeline.analyze import run_analyze
    from citylens.pipeline.explain import run_explain
    from citylens.pipeline.ingest import run_ingest
    from citylens.pipeline.overlap import run_overlap
    from citylens.pipeline.report import run_report
    from citylens.pipeline.segment import run_segment
    from citylens.pipeline.train import run_train

    return {
        "ingest": run_ingest,
        "train": run_train,
        "explain": run_explain,
        "segment": run_segment,
        "overlap": run_overlap,
        "analyze": run_analyze,
        "report": run_report,
    }


STAGES = ("ingest", "train", "explain", "segment", "overlap", "analyze", "report")


def run_study(
    cfg: StudyConfig,
    stages: list[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> list[StageResult]:
    """Run (or skip) the study's stages in order on Ray.

    Args:
        cfg: A validated study config.
        stages: Subset of :data:`STAGES` to run (default: all, in order).
        force: Re-run stages even when their records are up to date.
        progress: Where progress lines go.

    Returns:
        One :class:`StageResult` per stage asked for.
    """
    wanted = list(stages or STAGES)
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    store = Store(cfg.store, cfg.run.storage_options)
    store.write_text("study.yaml", dump_config(cfg))
    cluster.connect(cfg)
    ctx = Context(cfg, store, force, progress)
    impl = _stages()
    results = []
    for stage in STAGES:
        if stage not in wanted:
            continue
        if stage not in impl:
            progress(f"{stage}: not yet")
            results.append(StageResult(stage, "not yet"))
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
