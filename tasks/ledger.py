"""What runs wrote to Langfuse, for the runs that follow.

Langfuse shows a written score to readers only minutes later, and can drop one it accepted. So
every run records the scores it wrote (value and comment; one small JSON file per chunk, under
the UTC day of each unit's start). A later run of the same stream counts a unit recorded within
the read lag as scored, and re-sends a recorded score Langfuse still does not show after the lag,
without paying TLM again. Any fsspec URL works (a local folder by default; object storage when
workers run on several machines).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta

import fsspec

from tasks.config import LangfuseSettings, Tuning
from tasks.models import Entry

logger = logging.getLogger("trust.ledger")


def default_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().home / "trust-eval" / "ledger")


def stream_of(cfg: LangfuseSettings, score_name: str) -> str:
    """One stream per Langfuse project and score name (score ids derive from the name)."""
    key = "\n".join([cfg.base_url, cfg.public_key, score_name])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def days_of(start: datetime, end: datetime) -> list[date]:
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


class Ledger:
    def __init__(self, url: str, stream: str, *, retention_s: float) -> None:
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = f"{root.rstrip('/')}/{stream}"
        self.retention_s = retention_s

    @classmethod
    def of(cls, cfg: LangfuseSettings, tuning: Tuning, score_name: str) -> Ledger:
        return cls(
            tuning.ledger_url or default_url(),
            stream_of(cfg, score_name),
            retention_s=tuning.ledger_retention_s,
        )

    def write(
        self,
        entries: Mapping[date, Mapping[str, tuple[float | None, str | None, bool]]],
        *,
        run_id: str,
        chunk: int,
        now: float | None = None,
    ) -> None:
        """Record (value, comment, missing) per key, by the UTC day of each unit's start."""
        now = time.time() if now is None else now
        for day, scores in entries.items():
            if not scores:
                continue
            folder = f"{self.root}/{day.isoformat()}"
            self.fs.makedirs(folder, exist_ok=True)
            body = json.dumps({"written_at": now, "scores": scores}, ensure_ascii=False)
            name = f"{int(now * 1000):013d}-{run_id}-{chunk}.json"
            self.fs.pipe_file(f"{folder}/{name}", body.encode())

    def read(self, days: Iterable[date], *, now: float | None = None) -> dict[str, Entry]:
        """The newest entry per key for those days (files past retention are removed)."""
        now = time.time() if now is None else now
        out: dict[str, Entry] = {}
        for day in days:
            folder = f"{self.root}/{day.isoformat()}"
            try:
                names = sorted(str(p) for p in self.fs.ls(folder, detail=False))
            except FileNotFoundError:
                continue
            for path in names:  # oldest first: newer entries overwrite
                try:
                    data = json.loads(self.fs.cat_file(path))
                    written = float(data["written_at"])
                    scores = data["scores"]
                except (ValueError, KeyError, TypeError, OSError) as err:
                    logger.warning("skipping unreadable ledger file %s: %s", path, err)
                    continue
                if now - written > self.retention_s:
                    with contextlib.suppress(OSError):
                        self.fs.rm(path)
                    continue
                for key, (value, comment, missing) in scores.items():
                    out[key] = Entry(value, comment, written, bool(missing))
        return out
