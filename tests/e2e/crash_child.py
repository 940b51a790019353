"""Run the window flow in a process of its own (tests/e2e/test_crash.py kills it mid-upload).

``python tests/e2e/crash_child.py START END TAG...``, configured by the environment; prints
``REPORT:<json>`` (or ``FAILED:<json>`` and exits 1). With ``CRASH_CHILD_GATE_FILE`` it waits
for that file before starting Prefect; with ``CRASH_CHILD_GO_FILE`` it starts Prefect, prints
``READY`` and waits for that file before the flow runs.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def wait_for_file(path: str | None) -> None:
    deadline = time.monotonic() + 600
    while path and not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    from prefect.client.orchestration import get_client

    from flows.evaluate_traces import EvaluationFailed, evaluate_traces

    start, end = datetime.fromisoformat(argv[0]), datetime.fromisoformat(argv[1])
    print("STARTED", flush=True)
    wait_for_file(os.environ.get("CRASH_CHILD_GATE_FILE"))
    go = os.environ.get("CRASH_CHILD_GO_FILE")
    if go:
        with get_client(sync_client=True) as client:  # starts the ephemeral server
            client.hello()
        print("READY", flush=True)
        wait_for_file(go)
    try:
        report = evaluate_traces(window_start=start, window_end=end, tags=argv[2:])
    except EvaluationFailed as err:
        print("FAILED:" + err.report.model_dump_json(), flush=True)
        return 1
    print("REPORT:" + report.model_dump_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
