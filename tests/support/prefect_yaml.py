"""The deployments prefect.yaml declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def declared_deployments() -> dict[str, dict[str, Any]]:
    """prefect.yaml's deployments by name."""
    data = yaml.safe_load(PREFECT_YAML.read_text())
    return {d["name"]: d for d in data["deployments"]}
