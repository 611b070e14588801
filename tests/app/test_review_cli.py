"""`run.py unknowns`, `name`, `not-this`, `rematch` from the shell: bad input is one `error:` line (exit 2),
before any model is loaded. (Their real work: tests/app/test_library_app.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main
from stream.store import EventRecord, RunRecord, open_store

T0 = 1_796_092_710.0


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_a_missing_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["unknowns"], ["rematch", "--dry-run"], ["not-this", "3"], ["name", "1", "bob"]):
        assert main([*command, "--db", str(tmp_path / "missing.db"), "--gallery", str(tmp_path / "g")]) == 2
        assert _error(capsys) == f"error: no event database at {tmp_path / 'missing.db'}"
    assert not (tmp_path / "missing.db").exists()


def test_bad_names_times_and_events_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "events.db"
    with open_store(db) as store:
        run = RunRecord.new(started=T0)
        store.begin_run(run)
        store.add_events([EventRecord(run.run_id, T0, 0.0, "cam", "track_started", 0, 1)])
    base = ["--db", str(db), "--gallery", str(tmp_path / "gallery")]
    assert main(["name", "1", "../etc", *base]) == 2
    assert _error(capsys) == "error: person: the name may not contain / ('../etc')"
    assert main(["unknowns", "--since", "last tuesday", *base]) == 2
    assert _error(capsys).startswith("error: --since:")
    assert main(["not-this", "1", *base]) == 2
    assert _error(capsys) == "error: event 1 (track_started) names nobody"
    assert main(["not-this", "99", *base]) == 2
    assert _error(capsys) == "error: no event 99"
    assert not (tmp_path / "gallery").exists()
