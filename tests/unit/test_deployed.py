"""flows/stopping.py's one reading of Prefect's context: is this run a deployment's?"""

from __future__ import annotations

from contextvars import ContextVar
from uuid import uuid4

import prefect.context
import prefect.flow_engine

from flows.stopping import deployed


def test_deployed_reads_the_context_variable_prefects_engine_sets() -> None:
    """The engine sets ``prefect.context._deployment_id`` for a deployment's runs (and those
    nested in them); a Prefect release that renames it fails here, not silently in a run."""
    var = prefect.context._deployment_id
    assert isinstance(var, ContextVar)
    assert (
        "_deployment_id.set(self.flow_run.deployment_id)"
        in open(  # noqa: SIM115
            prefect.flow_engine.__file__, encoding="utf-8"
        ).read()
    )
    assert deployed() is False  # no run at all: never a request to find out
    token = var.set(uuid4())
    try:
        assert deployed() is True
    finally:
        var.reset(token)
    assert deployed() is False
