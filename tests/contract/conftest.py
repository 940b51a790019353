"""Contract layer: the sandboxes over real HTTP, driven by the real SDKs and tasks; no flow runs.

cleanlab_tlm reads CLEANLAB_API_BASE_URL once, when first imported: the process-wide TLM sandbox
starts here, before any test module of this folder (or the code it tests) imports it.
"""

from typing import Any

import pytest

from sandbox.tlm import session_tlm_sandbox

session_tlm_sandbox()

import yaml  # noqa: E402

from tests.support.openapi import SPEC_PATH, Validate, validator  # noqa: E402


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    """Langfuse's OpenAPI spec; the test is skipped when ``../shared/reference/`` lacks it."""
    if not SPEC_PATH.is_file():
        pytest.skip(f"Langfuse OpenAPI spec not found at {SPEC_PATH.resolve()}")
    with SPEC_PATH.open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


@pytest.fixture(scope="session")
def validate(openapi_spec: dict[str, Any]) -> Validate:
    """``validate(schema_name, instance)`` against the spec's ``#/components/schemas/``."""
    return validator(openapi_spec)
