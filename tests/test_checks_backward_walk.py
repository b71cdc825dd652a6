"""backward finds every broken rollback in one walk, and goes on after each without replaying from empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgshift.checks import backward
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from pgshift.migrations.apply import Limits
from tests.conftest import write_migration


def _columns(folder: Path, count: int, broken: set[int], concurrent: set[int] | None = None) -> None:
    """Migration n adds column c_n to t (or, in ``concurrent``, an index built CONCURRENTLY); those in
    ``broken`` have a rollback that forgets its work."""
    write_migration(folder, "20240101000000_t", "CREATE TABLE t (id int PRIMARY KEY);", "DROP TABLE t;")
    for n in range(1, count + 1):
        ident = f"2024010200{n:04d}_step_{n}"
        if n in (concurrent or set()):
            sql = f"CREATE INDEX CONCURRENTLY t_c_{n - 1} ON t (c_{n - 1});"
            undo = f"DROP INDEX CONCURRENTLY t_c_{n - 1};"
        else:
            sql, undo = f"ALTER TABLE t ADD COLUMN c_{n} int;", f"ALTER TABLE t DROP COLUMN c_{n};"
        write_migration(folder, ident, sql, "-- forgot to undo it\n" if n in broken else undo)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_every_broken_rollback_is_found_and_the_others_pass(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _columns(migrations_dir, 40, broken=set(range(2, 41, 2)))
    report = backward.run(db_url, source.read(migrations_dir), Limits())
    failed = sorted(int(t.id.rsplit("_", 1)[1]) for t in report.trips if t.state == "failed")
    assert failed == list(range(2, 41, 2))
    assert sum(1 for t in report.trips if t.state == "ok") == 21  # the table and the 20 good steps
    assert report.summary().startswith("20 of 41 rollback(s) fail")


@pytest.mark.parametrize("where", [5, 37])
@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_broken_concurrent_rollback_goes_on_from_a_saved_copy(
        where: int, db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _columns(migrations_dir, 40, broken={where, 39}, concurrent={where})
    report = backward.run(db_url, source.read(migrations_dir), Limits())
    states = {int(t.id.rsplit("_", 1)[1]) if "step" in t.id else 0: t.state for t in report.trips}
    assert {n for n, state in states.items() if state == "failed"} == {where, 39}
    assert all(state == "ok" for n, state in states.items() if n not in (where, 39))
    broken = next(t for t in report.trips if t.id.endswith(f"_step_{where}"))
    assert any(line.startswith(f"+ index public.t_c_{where - 1}") for line in broken.diff), broken.diff
