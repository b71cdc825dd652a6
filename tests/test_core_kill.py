"""kill -9 of the migrating process at every boundary of a mixed migration set.

After each kill: nothing applied without its record, no record without its effect, no lock left, and
a plain re-run finishes the job. Boundaries inside a migration's transaction are reached by holding
an advisory "gate" the migration waits on and killing the process there; boundaries between steps
use the engine's PGSHIFT_FAILPOINT hook, which SIGKILLs the process at that exact point.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import history, lock
from tests.conftest import INV, ROOT, cli_env, write_migration

M1, M2, M3 = "20250101000000_tx_one", "20250102000000_no_tx", "20250103000000_tx_three"
GATE = 7777


def gate(n: int) -> str:
    return f"SELECT pg_advisory_xact_lock_shared({GATE}, {n});"


def write_set(folder: Path) -> None:
    write_migration(folder, M1, f"CREATE TABLE t1 (id int);\n{gate(1)}\nALTER TABLE t1 ADD COLUMN v int;\n")
    write_migration(folder, M2, "\n".join([
        "CREATE TABLE t2 (id int, v int);",
        "CREATE INDEX CONCURRENTLY t2_v ON t2 (v);",
        gate(2),
        "CREATE INDEX CONCURRENTLY t2_id ON t2 (id);",
        "ALTER TABLE t2 ADD COLUMN w int;",
    ]))
    write_migration(folder, M3, "CREATE TABLE t3 (id int);")


# (how the process dies, where): failpoints name engine boundaries, gates block inside a statement.
BOUNDARIES = [
    ("failpoint", "locked"),
    ("gate", 1),
    ("failpoint", f"committed:{M1}"),
    ("failpoint", f"journaled:{M2}:1"),
    ("failpoint", f"executed:{M2}:2"),
    ("failpoint", f"journaled:{M2}:2"),
    ("gate", 2),
    ("failpoint", f"executed:{M2}:4"),
    ("failpoint", f"journaled:{M2}:5"),
    ("failpoint", f"committed:{M2}"),
    ("failpoint", f"committed:{M3}"),
]


def run_migrate(url: DatabaseUrl, folder: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [INV, "dev.migrate"], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env(url, ENVIRONMENT="development", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder), **env))


def wait_blocked_on_gate(db: Database, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                     "AND objid = %s AND NOT granted"
                     " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", [GATE, n])
        if row and row[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"the migration never reached gate {n}")


def facts(db: Database) -> dict[str, object]:
    def rel(name: str) -> bool:
        return db.one("SELECT to_regclass(%s) IS NOT NULL", [name]) == (True,)

    def column(table: str, col: str) -> bool:
        return db.one("SELECT count(*) FROM information_schema.columns WHERE table_name = %s "
                      "AND column_name = %s", [table, col]) == (1,)

    return {"t1": rel("t1"), "t1.v": rel("t1") and column("t1", "v"), "t2": rel("t2"), "t2_v": rel("t2_v"),
            "t2_id": rel("t2_id"), "t2.w": rel("t2") and column("t2", "w"), "t3": rel("t3"),
            "records": history.records(db)}


def assert_consistent(f: dict[str, object]) -> None:
    records = f["records"]
    assert isinstance(records, dict)
    state = {k: (r.state, r.statements_done) for k, r in records.items()}
    m1 = state.get(M1, (None, 0))[0] == "applied"
    assert f["t1"] == m1 and f["t1.v"] == m1, f"M1 effect {f['t1']} but record {state.get(M1)}"
    m3 = state.get(M3, (None, 0))[0] == "applied"
    assert f["t3"] == m3, f"M3 effect {f['t3']} but record {state.get(M3)}"
    done = state.get(M2, (None, 0))[1] if M2 in state else 0
    if state.get(M2, (None, 0))[0] == "applied":
        assert done == 5
    # Statement k's effect exists iff the journal says done >= k; a non-transactional statement may
    # also exist one step ahead (it ran, the crash came before its journal step): re-runs settle that.
    assert f["t2"] == (done >= 1)
    assert f["t2_v"] in ((done >= 2,) if done != 1 else (False, True))
    assert f["t2_id"] in ((done >= 4,) if done != 3 else (False, True))
    assert f["t2.w"] == (done >= 5)


@pytest.mark.slow
@pytest.mark.parametrize(("how", "where"), BOUNDARIES, ids=[f"{h}-{w}" for h, w in BOUNDARIES])
def test_kill_at_boundary_then_rerun(db_url: DatabaseUrl, migrations_dir: Path, how: str, where: object) -> None:
    write_set(migrations_dir)
    with Database.connect(db_url) as observer:
        if how == "gate":
            observer.rows("SELECT pg_advisory_lock(%s, %s)", [GATE, where])
            proc = run_migrate(db_url, migrations_dir)
            wait_blocked_on_gate(observer, int(str(where)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
            observer.rows("SELECT pg_advisory_unlock(%s, %s)", [GATE, where])
        else:
            proc = run_migrate(db_url, migrations_dir, PGSHIFT_FAILPOINT=str(where))
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        # The server notices the dead client; its session (and advisory lock) goes with it.
        deadline = time.monotonic() + 10
        while not lock.is_free(observer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.is_free(observer), "the migration lock outlived the killed process"
        assert_consistent(facts(observer))

        rerun = run_migrate(db_url, migrations_dir)
        _out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        final = facts(observer)
        assert_consistent(final)
        records = final["records"]
        assert isinstance(records, dict)
        assert {k: r.state for k, r in records.items()} == {M1: "applied", M2: "applied", M3: "applied"}
        assert observer.one("SELECT bool_and(indisvalid) FROM pg_index WHERE indexrelid IN "
                            "('t2_v'::regclass, 't2_id'::regclass)") == (True,)
