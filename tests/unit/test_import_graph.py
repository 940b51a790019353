"""The stages in tasks/ are siblings: each imports only the shared modules, never another stage,
and the product never imports the sandbox or the benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = {
    "config",
    "models",
    "failures",
    "langfuse_api",
    "retry",
    "budgets",
    "clock",
    "errors",
    "stream",
    "evals",
    "explain",  # the score stage's explanation calls (imports models only)
}
PRODUCT = ("flows", "tasks", "deployments")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_stages_import_only_the_shared_modules() -> None:
    stages = sorted(p for p in (ROOT / "tasks").glob("*.py") if p.stem not in SHARED)
    assert len(stages) >= 6, "the stage modules were not found"
    offending = {
        p.stem: sorted(
            m for m in imported_modules(p) if m.startswith("tasks.") and m[6:] not in SHARED
        )
        for p in stages
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_shared_modules_import_no_stage() -> None:
    for name in SHARED:
        found = imported_modules(ROOT / "tasks" / f"{name}.py")
        tasks_imports = {m.removeprefix("tasks.") for m in found if m.startswith("tasks.")}
        assert tasks_imports <= SHARED - {name}, (name, tasks_imports - SHARED)


def test_the_product_never_imports_the_sandbox_or_the_benchmarks() -> None:
    found = {
        str(p.relative_to(ROOT)): m
        for pkg in PRODUCT
        for p in (ROOT / pkg).rglob("*.py")
        for m in imported_modules(p)
        if m.split(".")[0] in {"sandbox", "benchmarks", "tests"}
    }
    assert found == {}
