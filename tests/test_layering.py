"""The house rules of ARCHITECTURE.md, checked on the import graph (read from the source).

Stages are siblings (none imports another; ``run.py`` alone orders them), no module
imports itself back through others (late imports inside functions count too), and the
pure core below ``pipeline/`` imports neither Ray nor the pipeline.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import citylens

ROOT = Path(citylens.__file__).parent
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


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> the citylens modules it imports anywhere in its source."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def test_the_stages_are_the_ones_run_orders():
    from citylens.pipeline.run import STAGES as ordered

    assert ordered == STAGES


def test_no_stage_imports_another_stage():
    graph = _graph()
    stages = {f"citylens.pipeline.{s}" for s in STAGES}
    crossings = {(m, d) for m in stages for d in graph[m] if d in stages}
    assert crossings == set()
    # and only run.py reaches every stage
    importers = {m for m, deps in graph.items() if deps & stages}
    assert importers == {"citylens.pipeline.run"}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_core_below_the_pipeline_imports_neither_ray_nor_the_pipeline():
    offenders = []
    for path in ROOT.rglob("*.py"):
        name = _module(path)
        if name.startswith("citylens.pipeline") or name == "citylens.cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            mods = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for mod in mods:
                if mod == "ray" or mod.startswith(("ray.", "citylens.pipeline")):
                    offenders.append((name, mod))
    assert offenders == []


def test_the_synthetic_corpus_and_the_config_schema_need_no_torch():
    code = (
        "import sys; import citylens.data.synth, citylens.vocabulary, citylens.tables, "
        "citylens.config; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
