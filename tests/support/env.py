"""The environment the tests run the product code in."""

from __future__ import annotations

import socket
from typing import Any

import pytest

# Production defaults wait seconds to minutes; the tests run the same code with short delays.
FAST_TUNING = {
    "TRUST_EVAL_RETRIES": "3",
    "TRUST_EVAL_RETRY_BASE_DELAY_S": "0.01",
    "TRUST_EVAL_RETRY_MAX_DELAY_S": "2",
    "TRUST_EVAL_TLM_TIMEOUT_S": "20",
    "TRUST_EVAL_SETTLE_LAG_S": "0",
}

LOOPBACK = ("127.", "::1", "localhost")


def guard_network(mp: pytest.MonkeyPatch) -> None:
    """Until ``mp`` is undone, fail any TCP connection to anything but the loopback interface."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = str(address[0] if isinstance(address, tuple) else address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not host.startswith(LOOPBACK):
            raise ConnectionRefusedError(f"test tried to reach {address!r} beyond 127.0.0.1")
        return real_connect(self, address)

    mp.setattr(socket.socket, "connect", guarded)
