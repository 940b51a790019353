"""sandbox.prefect_home never copies over a database a home already has (a server may be on it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import prefect_home


def test_a_home_with_a_database_is_left_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[Path] = []
    monkeypatch.setattr(prefect_home, "copy_database", copies.append)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "prefect.db").write_bytes(b"a server's data")
    assert prefect_home.fresh_home(tmp_path / "used") == tmp_path / "used"
    assert (tmp_path / "used" / "prefect.db").read_bytes() == b"a server's data"
    assert copies == []
    prefect_home.fresh_home(tmp_path / "new")
    assert copies == [tmp_path / "new" / "prefect.db"]
