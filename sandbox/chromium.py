"""Headless Chromium from the command line: a PNG of a page, or its DOM once scripts have run.

The Prefect UI is a single-page app: ``--virtual-time-budget`` lets its scripts fetch from the
API and render before the page is captured. Each call uses a fresh, throw-away profile and no
proxy (everything it opens is on 127.0.0.1), and a timeout stops Chromium with its children.
Used by ``make screenshots`` (:mod:`sandbox.screenshots`) and tests/e2e/test_ui_render.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

WIDTH, HEIGHT = 1400, 900
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--hide-scrollbars",
    # draw every frame fully, animations on the main thread (paced by the virtual time): without
    # these a page caught mid fade-in comes out dim
    "--run-all-compositor-stages-before-draw",
    "--disable-threaded-animation",
)


def find_chromium() -> str | None:
    """The Chromium binary on PATH (``chromium``, else ``chromium-browser``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(
    args: list[str], budget_ms: int, size: tuple[int, int], timeout: float
) -> subprocess.CompletedProcess[str]:
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("chromium not found on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
            *args,
        ]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its renderer and GPU processes go with it on a timeout
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(
                f"chromium did not finish within {timeout:.0f} s: {cmd[-1]}"
            ) from None
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}) on {cmd[-1]}:\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def dump_dom(
    url: str,
    *,
    budget_ms: int = 8000,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    timeout: float = 120.0,
) -> str:
    """The page's DOM (serialized HTML) after ``budget_ms`` of virtual time."""
    return _run(["--dump-dom", url], budget_ms, size, timeout).stdout


def screenshot(
    url: str,
    out: Path,
    *,
    budget_ms: int = 8000,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    timeout: float = 120.0,
) -> Path:
    """A PNG of the page's viewport (``size``) after ``budget_ms`` of virtual time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _run([f"--screenshot={out}", url], budget_ms, size, timeout)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return out
