"""The fleet journal under many threads: appends that arrive together share one write and fsync, yet
every line lands exactly once, whole, and an append whose line could not be written raises."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pgshift.errors import ToolError
from pgshift.fleet.journal import Journal


def test_appends_from_many_threads_each_land_once_and_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "logs" / "fleet.journal.jsonl")

    def target(n: int) -> None:
        for step in range(40):
            journal.append("target", "run-1", target=f"t{n:02d}", state="running", step=step)

    threads = [threading.Thread(target=target, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = journal.records()
    assert len(records) == 16 * 40
    assert {(r["target"], r["step"]) for r in records} == {(f"t{n:02d}", s) for n in range(16) for s in range(40)}
    for n in range(16):  # one thread's lines keep their order
        assert [r["step"] for r in records if r["target"] == f"t{n:02d}"] == list(range(40))
    assert all(json.loads(line) for line in journal.path.read_text().splitlines())


def test_an_append_that_cannot_be_written_raises_and_the_next_one_still_writes(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the journal's folder should be")
    journal = Journal(blocker / "fleet.journal.jsonl")
    with pytest.raises(ToolError, match="cannot write the fleet journal"):
        journal.append("run", "run-1")
    blocker.unlink()
    journal.append("run", "run-2")
    assert [r["run"] for r in journal.records()] == ["run-2"]
