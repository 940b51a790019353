"""TLM requests in flight over time, one PNG per scenario (every contender on one chart)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.report import CONTENDER_LABELS, scenario_label
from sandbox.tlm import Span, in_flight_series

MAX_POINTS = 1500


def series(spans: list[Span]) -> dict[str, Any]:
    """The in-flight step series of a run's TLM calls, time from its first call, downsampled
    (per time bucket: the bucket's peak) to at most MAX_POINTS points."""
    steps = in_flight_series(spans)
    if not steps:
        return {"t": [], "n": [], "peak": 0, "span_s": 0.0}
    t0, t1 = steps[0][0], steps[-1][0]
    peak = max(n for _, n in steps)
    if len(steps) > MAX_POINTS:
        width = (t1 - t0) / (MAX_POINTS // 2) or 1.0
        kept: dict[int, tuple[float, int]] = {}
        for t, n in steps:
            b = int((t - t0) / width)
            if b not in kept or n > kept[b][1]:
                kept[b] = (t0 + b * width, n)
        steps = [kept[b] for b in sorted(kept)] + [steps[-1]]
    return {
        "t": [round(t - t0, 3) for t, _ in steps],
        "n": [n for _, n in steps],
        "peak": peak,
        "span_s": round(t1 - t0, 3),
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_charts(runs: list[dict[str, Any]], out_dir: Path, stamp: str, latency: str) -> list[Path]:
    """One PNG per (scenario, size): the last repetition of each contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in runs:
        if r.get("tlm_in_flight", {}).get("t"):
            groups.setdefault((scenario_label(r), r["size"]), {})[r["contender"]] = r
    paths = []
    for (label, size), by_contender in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
        for contender, r in sorted(by_contender.items()):
            s = r["tlm_in_flight"]
            ax.step(
                s["t"],
                s["n"],
                where="post",
                linewidth=1.1,
                label=f"{CONTENDER_LABELS.get(contender, contender)} "
                f"(peak {s['peak']}, {s['span_s']:.1f} s)",
            )
        ax.set_xlabel("seconds since the contender's first TLM request")
        ax.set_ylabel("TLM requests in flight")
        ax.set_title(f"{size:,} traces · {label} · TLM {latency}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"inflight-{stamp}-{slug(latency)}-{slug(label)}-{size}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
