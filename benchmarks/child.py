"""What every contender process shares: its spec in, its figures out, its own peak memory.

A contender runs as ``python -m benchmarks.contender_<name> SPEC.json OUT.json`` in a fresh
interpreter; the harness gives it the sandboxes' addresses and keys through the environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cleanlab_tlm.utils.chat import form_prompt_string

T0 = time.perf_counter()  # as soon as the contender module imports this one


@dataclass(frozen=True, slots=True)
class Spec:
    window_start: datetime
    window_end: datetime
    tag: str
    score_name: str
    system_prompt_key: str
    options: dict[str, Any] = field(default_factory=dict)  # the flow's EvalOptions fields

    @classmethod
    def load(cls, path: str) -> Spec:
        raw = json.loads(Path(path).read_text())
        return cls(
            window_start=datetime.fromisoformat(raw["window_start"]),
            window_end=datetime.fromisoformat(raw["window_end"]),
            tag=raw["tag"],
            score_name=raw["score_name"],
            system_prompt_key=raw["system_prompt_key"],
            options=dict(raw.get("options") or {}),
        )


class Clock:
    """The timed part of a contender: wall seconds and this process's CPU seconds."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def lap(self) -> float:
        return time.perf_counter() - self.wall0

    def stop(self, figures: dict[str, Any]) -> None:
        figures["work_s"] = round(time.perf_counter() - self.wall0, 3)
        figures["work_cpu_s"] = round(time.process_time() - self.cpu0, 3)


def vm_kb(pid: int | str, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field in kB (VmHWM = peak RSS), None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb(pid: int | str = "self") -> float | None:
    kb = vm_kb(pid, "VmHWM")
    return round(kb / 1024, 1) if kb is not None else None


def tag_filter(tag: str) -> str:
    return json.dumps(
        [{"type": "arrayOptions", "column": "tags", "operator": "any of", "value": [tag]}]
    )


def seed_pair(raw_input: Any, raw_output: Any, metadata: Any, key: str) -> tuple[str, str]:
    """(prompt, response) the seed's way for an ``@observe`` trace: the first argument as the
    user turn, the system prompt from trace metadata, the output as the response."""
    data = json.loads(raw_input) if isinstance(raw_input, str) else raw_input
    question = str(data["args"][0])
    system = metadata.get(key) if isinstance(metadata, dict) else None
    messages = [{"role": "user", "content": question}]
    if system:
        messages.insert(0, {"role": "system", "content": str(system)})
    prompt = form_prompt_string(messages)
    return prompt, raw_output if isinstance(raw_output, str) else json.dumps(raw_output)


def main(work: Callable[[Spec, dict[str, Any]], None]) -> None:
    """Run ``work(spec, figures)``; write ``figures`` (plus timings and peak RSS) as JSON.

    ``work`` fills ``figures`` and sets ``figures["work_s"]`` itself (the timed part: after
    imports and warm-up). Exit status 0 even when the work failed: the failure is a figure.
    """
    spec_path, out_path = sys.argv[1], sys.argv[2]
    figures: dict[str, Any] = {"pid": os.getpid(), "ok": False}
    try:
        work(Spec.load(spec_path), figures)
        figures["ok"] = figures.get("error") is None
    except BaseException as err:  # the failure is recorded, not raised
        figures["error"] = f"{type(err).__name__}: {str(err)[:500]}"
        figures["traceback"] = traceback.format_exc()[-4000:]
    figures["process_in_s"] = round(time.perf_counter() - T0, 3)
    figures["peak_rss_mb"] = peak_rss_mb()
    Path(out_path).write_text(json.dumps(figures, indent=1, default=str))
