"""The process-wide TLM sandbox (:func:`session_tlm_sandbox`): cleanlab-tlm reads its base URL
once, at import, so a process can point it at one sandbox only."""

from __future__ import annotations

import atexit
import os
import sys
import threading

from sandbox.tlm.server import TLMSandbox

_session: TLMSandbox | None = None
_session_lock = threading.Lock()


def session_tlm_sandbox() -> TLMSandbox:
    """The process-wide TLM sandbox: started on first call, then reused (never restarted).

    Sets ``CLEANLAB_API_BASE_URL`` and ``CLEANLAB_TLM_API_KEY`` in ``os.environ``. Call it
    BEFORE anything imports ``cleanlab_tlm`` (e.g. at conftest import time): the client reads
    the base URL once, at import. Raises RuntimeError if ``cleanlab_tlm`` was already imported
    with another base URL, rather than letting the tests talk to the real service.
    """
    global _session
    with _session_lock:
        if _session is None:
            sandbox = TLMSandbox().start()
            os.environ.update(sandbox.env())
            atexit.register(sandbox.stop)
            _session = sandbox
        api = sys.modules.get("cleanlab_tlm.internal.api.api")
        current = getattr(api, "base_url", None) if api is not None else None
        if current is not None and current != _session.base_url:
            raise RuntimeError(
                f"cleanlab_tlm was imported with CLEANLAB_API_BASE_URL={current!r} before the "
                f"TLM sandbox ({_session.base_url}) was configured; call "
                "session_tlm_sandbox() before anything imports cleanlab_tlm."
            )
        return _session
