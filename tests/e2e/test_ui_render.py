"""The lowest-trust table as the Prefect UI renders it: a real ``prefect server``, the artifact made
the way the flow makes it, and headless Chromium reading the page once its scripts have run.

The cells are markdown: each trace cell must be a link to the trace whose text is the short id,
and the escaping that keeps cell text from turning into markup must not show as backslashes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.artifacts import create_table_artifact

from deployments import local
from sandbox.chromium import dump_dom, find_chromium
from sandbox.prefect_home import fresh_home
from sandbox.runner import free_port
from tasks.report import WHY_CHARS, LowTrustRow, lowest_table, short_id
from tasks.stream import Stream
from tests.support.prefect_stack import in_process_on

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium is not installed (Debian: apt-get install chromium): the UI render test "
    "needs a headless browser",
)

LANGFUSE_UI = "http://127.0.0.1:3000/project/p1/traces/"
# text that markdown would turn into markup unless escaped: the escapes must not show
ROWS = [
    LowTrustRow(
        trace_id="0f3a9c2e5b7d4e1f8a6c2b9d0e4f7a13",
        name="trivia",
        score=0.041,
        explanation="The answer says *all* months; snake_case [sic] is wrong_ly #1 (see <b>).",
        start_time=datetime(2026, 11, 30, 6, tzinfo=UTC),
        url=LANGFUSE_UI + "0f3a9c2e5b7d4e1f8a6c2b9d0e4f7a13",
        question="What is 2*3*4 in snake_case_form?",
        answer="__24__ | twenty_four",
    ),
    LowTrustRow(
        trace_id="7c1e88b04d2a4f6e9b3d5a7c1f0e2d46",
        name="trivia",
        score=0.2,
        explanation="Plain text.",
        start_time=datetime(2026, 11, 30, 12, tzinfo=UTC),
        url=LANGFUSE_UI + "7c1e88b04d2a4f6e9b3d5a7c1f0e2d46",
        question="Who wrote 'Pride and Prejudice'?",
        answer="Jane Austen",
    ),
    LowTrustRow(
        trace_id="short-id",  # ten characters or fewer: shown whole
        name=None,
        score=0.33,
        explanation=None,
        start_time=None,
        url=LANGFUSE_UI + "short-id",
        question="What is the capital of Kenya? (#0)",
        answer="Nairobi",
    ),
]


class Table(HTMLParser):
    """The links (href, text) and the cell texts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.cells: list[str] = []
        self._link: list[str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._link = [dict(attrs).get("href") or "", ""]
        elif tag == "td":
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1].strip()))
            self._link = None
        elif tag == "td" and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link[1] += data
        if self._cell is not None:
            self._cell += data


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """A real ``prefect server`` (own PREFECT_HOME, free port); its UI address."""
    home = fresh_home(tmp_path / "prefect-home")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and k.lower() not in ("http_proxy", "https_proxy")
    }
    with (
        local.running_server(home, free_port(), base) as env,
        in_process_on(env["PREFECT_API_URL"], home),
    ):
        yield env["PREFECT_API_URL"].removesuffix("/api")


@flow(name="ui-render-table")
def publish_table(rows: list[LowTrustRow]) -> UUID:
    """The lowest-trust table, created as flows/publish.py creates it."""
    made = create_table_artifact(
        table=lowest_table(rows),
        key=Stream.of("e2e-project", ["TLM_eval_pipeline"], "trust_score").artifact_key(
            "trust-lowest"
        ),
        description=f"The {len(rows)} least trustworthy traces, lowest first",
    )
    assert isinstance(made, UUID)
    return made


def rendered(url: str, attempts: int = 3) -> Table:
    """The page's table once the single-page app has drawn it, its cells and their links (more
    virtual time each try: on a busy machine the cells have come without their links)."""
    dom = ""
    for attempt in range(attempts):
        dom = dump_dom(url, budget_ms=10000 * (attempt + 1), timeout=60)
        page = Table()
        page.feed(dom)
        traces = [href for href, _ in page.links if href.startswith(LANGFUSE_UI)]
        if len(page.cells) >= len(ROWS) and len(traces) >= len(ROWS):  # the links drawn too
            return page
    raise AssertionError(f"no table rendered at {url}:\n{dom[-3000:]}")


def test_the_lowest_trust_table_links_each_trace_by_its_short_id(prefect_server: str) -> None:
    t0 = time.monotonic()
    artifact_id = publish_table(ROWS)
    page = rendered(f"{prefect_server}/artifacts/artifact/{artifact_id}")
    print(f"artifact rendered after {time.monotonic() - t0:.1f} s")

    for row in ROWS:
        assert (row.url, short_id(row.trace_id)) in page.links, (row.url, page.links)
    assert short_id(ROWS[0].trace_id) == "0f3a9c2e…"  # long ids are cut, with an ellipsis
    text = " ".join(page.cells)
    for escape in ("\\_", "\\*", "\\[", "\\#", "\\(", "\\|", "\\<"):
        assert escape not in text, (escape, page.cells)
    # the escaped characters show as themselves
    assert "What is 2*3*4 in snake_case_form?" in page.cells
    assert "__24__ | twenty_four" in page.cells
    assert "What is the capital of Kenya? (#0)" in page.cells
    # the explanation before the answer, shortened to fit the first screen (in full: Langfuse)
    why = ROWS[0].explanation or ""
    assert f"{why[: WHY_CHARS - 1]}…" in page.cells and why[WHY_CHARS - 1 :] not in text
    assert page.cells.index("Plain text.") < page.cells.index("Jane Austen")
