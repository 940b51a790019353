"""docs/RELIABILITY.md against the test files it names."""

from __future__ import annotations

import re
from pathlib import Path


def test_reliability_doc_names_real_tests() -> None:
    """docs/RELIABILITY.md names every reliability test, and only tests that exist."""
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "RELIABILITY.md").read_text()
    refs = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)(?:\[([^\]]+)\])?", doc))
    assert refs
    for path, func, param in refs:
        source = (root / path).read_text()
        assert f"def {func}(" in source, f"{path}::{func} named in the doc does not exist"
        if param:
            assert f'"{param}"' in source, f"{path}::{func}[{param}]: no such case"
    named = {(path, func) for path, func, _ in refs}
    for path in (
        "tests/flow/test_faults_langfuse.py",
        "tests/flow/test_faults_tlm.py",
        "tests/e2e/test_crash.py",
        "tests/flow/test_bad_input.py",
        "tests/flow/test_config.py",
        "tests/flow/test_secrets.py",
    ):
        source = (root / path).read_text()
        for func in re.findall(r"^def (test_\w+)\(", source, re.M):
            assert (path, func) in named, f"{path}::{func} missing from the doc"
