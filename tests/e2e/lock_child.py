"""Hold a window lock in a flow run of its own (tests/e2e/test_window_lock.py ends it).

``python tests/e2e/lock_child.py START END TAG``, Prefect and TRUST_EVAL_LOCK_* from the
environment: prints ``HELD <flow run id>`` once it holds the lock, holds it until the file
``LOCK_CHILD_RELEASE_FILE`` names exists (or forever), then prints ``RELEASED``.
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
    from tasks.config import load_tuning
    from tasks.stream import Stream

    @flow(name="lock-child", log_prints=False)
    def hold(start: datetime, end: datetime, tag: str) -> None:
        t = load_tuning()
        stream = Stream.of(
            os.environ.get("LOCK_CHILD_PROJECT", "e2e-project"), [tag], "trust_score"
        )
        with window_lock(stream, start, end, lease_s=t.lock_lease_s, timeout_s=t.lock_timeout_s):
            print(f"HELD {flow_run.id}", flush=True)
            release = os.environ.get("LOCK_CHILD_RELEASE_FILE")
            while not (release and Path(release).exists()):
                time.sleep(0.05)
        print("RELEASED", flush=True)

    hold(datetime.fromisoformat(argv[0]), datetime.fromisoformat(argv[1]), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
