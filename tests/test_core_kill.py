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


# M2's statements in each shape, with what each leaves: a relation, a column ("table.column"), or
# nothing (the gate). The CREATE INDEX CONCURRENTLY statements sit first, in the middle and last.
CIC = "CREATE INDEX CONCURRENTLY"
SHAPES: dict[str, list[tuple[str, str | None]]] = {
    "middle": [("CREATE TABLE t2 (id int, v int);", "t2"), (f"{CIC} t2_v ON t2 (v);", "t2_v"),
               (gate(2), None), (f"{CIC} t2_id ON t2 (id);", "t2_id"), ("ALTER TABLE t2 ADD COLUMN w int;", "t2.w")],
    "first": [(f"{CIC} t1_v ON t1 (v);", "t1_v"), ("CREATE TABLE t2 (id int, v int);", "t2"), (gate(2), None),
              ("ALTER TABLE t2 ADD COLUMN w int;", "t2.w")],
    "last": [("CREATE TABLE t2 (id int, v int);", "t2"), (gate(2), None), ("ALTER TABLE t2 ADD COLUMN w int;", "t2.w"),
             (f"{CIC} t2_v ON t2 (v);", "t2_v")],
}


def write_set(folder: Path, shape: str = "middle") -> None:
    write_migration(folder, M1, f"CREATE TABLE t1 (id int);\n{gate(1)}\nALTER TABLE t1 ADD COLUMN v int;\n")
    write_migration(folder, M2, "\n".join(text for text, _effect in SHAPES[shape]))
    write_migration(folder, M3, "CREATE TABLE t3 (id int);")


def _boundaries(shape: str) -> list[tuple[str, str, object]]:
    """(shape, how the process dies, where): failpoints name engine boundaries, gates block inside a
    statement, ``build`` kills the process and its server session in the middle of an index build.
    The middle shape is killed at every boundary; the others around their CONCURRENTLY statement."""
    steps = SHAPES[shape]
    cic = [k for k, (text, _e) in enumerate(steps, 1) if text.startswith(CIC)]
    every: list[tuple[str, object, int]] = [("failpoint", "locked", 0), ("gate", 1, 0),
                                            ("failpoint", f"committed:{M1}", 0)]
    for k, (text, _effect) in enumerate(steps, 1):
        if text.startswith("SELECT pg_advisory"):
            every.append(("gate", 2, k))
        if k in cic:
            every += [("failpoint", f"executed:{M2}:{k}", k), ("build", k, k)]
        every.append(("failpoint", f"journaled:{M2}:{k}", k))
    every += [("failpoint", f"committed:{M2}", 99), ("failpoint", f"committed:{M3}", 99)]
    near = {k for c in cic for k in (c - 1, c)}
    return [(shape, how, where) for how, where, k in every if shape == "middle" or k in near]


BOUNDARIES = [b for shape in SHAPES for b in _boundaries(shape)]


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


def facts(db: Database, shape: str) -> dict[str, object]:
    def rel(name: str) -> bool:
        return db.one("SELECT to_regclass(%s) IS NOT NULL", [name]) == (True,)

    def exists(effect: str) -> bool:
        if "." not in effect:
            return rel(effect)
        table, col = effect.split(".")
        return rel(table) and db.one("SELECT count(*) FROM information_schema.columns WHERE table_name = %s "
                                     "AND column_name = %s", [table, col]) == (1,)

    found: dict[str, object] = {e: exists(e) for _text, e in SHAPES[shape] if e}
    found.update({"t1": rel("t1"), "t1.v": exists("t1.v"), "t3": rel("t3"), "records": history.records(db)})
    return found


def assert_consistent(f: dict[str, object], shape: str) -> None:
    records = f["records"]
    assert isinstance(records, dict)
    state = {k: (r.state, r.statements_done) for k, r in records.items()}
    m1 = state.get(M1, (None, 0))[0] == "applied"
    assert f["t1"] == m1 and f["t1.v"] == m1, f"M1 effect {f['t1']} but record {state.get(M1)}"
    m3 = state.get(M3, (None, 0))[0] == "applied"
    assert f["t3"] == m3, f"M3 effect {f['t3']} but record {state.get(M3)}"
    steps = SHAPES[shape]
    done = state.get(M2, (None, 0))[1] if M2 in state else 0
    if state.get(M2, (None, 0))[0] == "applied":
        assert done == len(steps)
    # Statement k's effect exists iff the journal says done >= k; a non-transactional statement may
    # also exist one step ahead (it ran, or half-ran, and the crash came before its journal step):
    # re-runs settle that.
    for k, (text, effect) in enumerate(steps, 1):
        if effect is None:
            continue
        allowed = (False, True) if text.startswith(CIC) and done == k - 1 else (done >= k,)
        assert f[effect] in allowed, f"{effect} is {f[effect]} with {done} statements journaled"


def hold_snapshot(url: DatabaseUrl) -> Database:
    """A session with an open snapshot: a CREATE INDEX CONCURRENTLY waits for it before it marks the
    index valid, so the build stops there with the index INVALID."""
    holder = Database.connect(url)
    holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;")
    return holder


def wait_building(db: Database, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.one("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                     f"wait_event = 'virtualxid' AND query LIKE '{CIC}%'")
        if row:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the index build never started waiting")


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "how", "where"), BOUNDARIES, ids=[f"{s}-{h}-{w}" for s, h, w in BOUNDARIES])
def test_kill_at_boundary_then_rerun(db_url: DatabaseUrl, migrations_dir: Path, shape: str, how: str,
                                     where: object) -> None:
    write_set(migrations_dir, shape)
    with Database.connect(db_url) as observer:
        if how == "gate":
            observer.rows("SELECT pg_advisory_lock(%s, %s)", [GATE, where])
            proc = run_migrate(db_url, migrations_dir)
            wait_blocked_on_gate(observer, int(str(where)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
            observer.rows("SELECT pg_advisory_unlock(%s, %s)", [GATE, where])
        elif how == "build":
            gated = any(text == gate(2) for text, _e in SHAPES[shape][: int(str(where)) - 1])
            if gated:  # an earlier build would wait on the snapshot too: take it once past the gate
                observer.rows("SELECT pg_advisory_lock(%s, %s)", [GATE, 2])
            holder = None if gated else hold_snapshot(db_url)
            proc = run_migrate(db_url, migrations_dir)
            if gated:
                wait_blocked_on_gate(observer, 2)
                holder = hold_snapshot(db_url)
                observer.rows("SELECT pg_advisory_unlock(%s, %s)", [GATE, 2])
            assert holder is not None
            building = wait_building(observer)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
            observer.rows("SELECT pg_terminate_backend(%s)", [building])
            holder.close()
        else:
            proc = run_migrate(db_url, migrations_dir, PGSHIFT_FAILPOINT=str(where))
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        # The server notices the dead client; its session (and advisory lock) goes with it.
        deadline = time.monotonic() + 10
        while not lock.is_free(observer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.is_free(observer), "the migration lock outlived the killed process"
        assert_consistent(facts(observer, shape), shape)
        if how == "build":
            assert observer.one("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == (1,)

        rerun = run_migrate(db_url, migrations_dir)
        _out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        final = facts(observer, shape)
        assert_consistent(final, shape)
        records = final["records"]
        assert isinstance(records, dict)
        assert {k: r.state for k, r in records.items()} == {M1: "applied", M2: "applied", M3: "applied"}
        assert observer.one("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "WHERE c.relname IN ('t1_v', 't2_v', 't2_id') AND i.indisvalid") == (
            sum(1 for text, _e in SHAPES[shape] if text.startswith(CIC)),)
        assert observer.one("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == (0,)
