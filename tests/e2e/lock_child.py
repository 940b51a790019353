"""Hold a window lock in a flow run of its own (tests/e2e/test_window_lock.py kills or releases it).

``python tests/e2e/lock_child.py WINDOW_START WINDOW_END TAG``: the Prefect server (PREFECT_API_URL,
or none: an ephemeral server on PREFECT_HOME) and TRUST_EVAL_LOCK_* come from the environment.
Prints ``HELD <flow run id>`` once it holds the lock, then holds it until the file named by
``LOCK_CHILD_RELEASE_FILE`` exists (or forever), then prints ``RELEASED``.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str]) -> int:
    from prefect import flow
    from prefect.runtime import flow_run

    from flows.window_lock import window_lock

    @flow(name="lock-child", log_prints=False)
    def hold(start: datetime, end: datetime, tag: str) -> None:
        with window_lock(start, end, [tag], "trust_score"):
            print(f"HELD {flow_run.id}", flush=True)
            release = os.environ.get("LOCK_CHILD_RELEASE_FILE")
            while not (release and Path(release).exists()):
                time.sleep(0.05)
        print("RELEASED", flush=True)

    hold(datetime.fromisoformat(argv[0]), datetime.fromisoformat(argv[1]), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
