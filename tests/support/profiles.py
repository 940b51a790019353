"""Run a flow test on both Langfuse servers the product supports (see the README's table)."""

import pytest

PROFILES = ("current", "v4.16")
ON_BOTH_SERVERS = pytest.mark.parametrize("langfuse_sandbox", PROFILES, indirect=True)
