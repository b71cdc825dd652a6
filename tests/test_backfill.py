"""The backfill engine on a real server: kill -9 at random points, throttling, pause and resume."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import INV, ROOT, cli_env, full_url, inv_process
from tests.conftest import write_migration
from tests.helpers import wait_for

# Every write to a row counts itself: a row backfilled twice would show writes = 2.
TABLE_SQL = """
CREATE TABLE items (id bigint PRIMARY KEY, a integer NOT NULL, writes integer NOT NULL DEFAULT 0);
CREATE FUNCTION items_count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.writes := OLD.writes + 1;{slow}
    RETURN NEW;
END $$;
CREATE TRIGGER items_count_writes BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION items_count_writes();
INSERT INTO items (id, a) SELECT g * 3, g FROM generate_series(1, {rows}) g;
"""


def _fill(ident: str, column: str, expression: str) -> str:
    return (f"-- pgshift: expand\nALTER TABLE items ADD COLUMN {column} bigint;\n"
            f"-- pgshift: backfill items SET {column} = {expression}\n"
            f"-- pgshift: abort\nALTER TABLE items DROP COLUMN {column};\n")


def _journal(url: DatabaseUrl, ident: str) -> tuple[Any, ...] | None:
    with Database.connect(url) as db:
        if not db.has_relation("pgshift.backfills"):
            return None
        return db.one("SELECT state, rows_done, batches, paused, throttled FROM pgshift.backfills WHERE id = %s",
                      [ident])


@pytest.mark.process
@pytest.mark.slow
def test_kill_9_at_random_points_resumes_with_every_row_written_once(task_db_url: DatabaseUrl,
                                                                      migrations_dir: Path) -> None:
    rows, trials = 40_000, 5
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL.format(rows=rows, slow=""))
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir),
                  INVOKE_PGSHIFT_BACKFILL_BATCH_SECONDS="0.002")
    assert inv_process("dev.migrate", env=env).returncode == 0
    chance = random.Random()
    kills = 0
    resumed: list[str] = []
    for trial in range(1, trials + 1):
        ident = f"2025010200000{trial}_fill_b{trial}"
        write_migration(migrations_dir, ident, _fill(ident, f"b{trial}", f"a * {trial}"))
        for _attempt in range(2):  # killed twice at random points of the backfill, then left to finish
            child = subprocess.Popen([INV, "dev.migrate"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                started = wait_for(lambda ident=ident, child=child: child.poll() is not None or (
                    (_journal(task_db_url, ident) or ("", 0, 0))[2] > 0), "the first batch", timeout=60)
                assert started
                time.sleep(chance.uniform(0.0, 0.4))
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
                    kills += 1
            finally:
                child.wait(timeout=60)
        done = inv_process("dev.migrate", env=env)
        assert done.returncode == 0, done.stderr
        resumed += [line for line in done.stdout.splitlines() if "resuming after" in line]
        journal = _journal(task_db_url, ident)
        assert journal is not None and journal[0] == "done" and journal[1] == rows, journal
        with Database.connect(task_db_url) as db:
            wrong = db.one(f"SELECT count(*) FROM items WHERE b{trial} IS DISTINCT FROM a * {trial}::bigint")
            twice = db.one(f"SELECT count(*) FROM items WHERE writes <> {trial}")
        assert wrong == (0,), f"trial {trial}: rows missed"
        assert twice == (0,), f"trial {trial}: rows written other than once per backfill"
    assert kills >= trials  # most runs were still in their backfill when killed
    assert resumed, "no run said it resumed a backfill"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_long_transaction_holds_the_backfill_and_it_says_so(db_url: DatabaseUrl, migrations_dir: Path,
                                                              make_settings: Any) -> None:
    settings = make_settings(db_url, backfill_max_xact_seconds=0.5)
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL.format(rows=5000, slow=""))
    api.migrate(settings)
    ident = "20250102000000_fill_b"
    write_migration(migrations_dir, ident, _fill(ident, "b", "a + 1"))
    reporting = replace(db_url, params=(*db_url.params, ("application_name", "nightly report")))
    said: list[str] = []
    failure: list[BaseException] = []

    def migrate() -> None:
        try:
            api.migrate(settings, progress=said.append)
        except BaseException as error:  # handed to the test's thread
            failure.append(error)

    with Database.connect(reporting) as holder:
        holder.execute("BEGIN; SELECT 1")
        time.sleep(0.7)
        runner = threading.Thread(target=migrate)
        runner.start()
        held = wait_for(lambda: [line for line in said if "held:" in line], "the throttle", timeout=60)
        assert "a transaction open" in held[0] and "nightly report" in held[0] and "0.5 s limit" in held[0], held
        journal = _journal(db_url, ident)
        assert journal is not None and journal[1] == 0 and "a transaction open" in journal[4]
        holder.execute("COMMIT")
    runner.join(timeout=60)
    assert not failure, failure
    assert any("going again" in line for line in said), said
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM items WHERE b IS DISTINCT FROM a + 1") == (0,)
    journal = _journal(db_url, ident)
    assert journal is not None and journal[:2] == ("done", 5000) and journal[4] is None


@pytest.mark.process
def test_pause_and_resume_from_another_terminal(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                make_settings: Any) -> None:
    # Each row's write sleeps a little, so the backfill runs long enough to be paused part way.
    rows = 3000
    settings = make_settings(task_db_url, backfill_batch_seconds=0.01)
    write_migration(migrations_dir, "20250101000000_items",
                    TABLE_SQL.format(rows=rows, slow="\n    PERFORM pg_sleep(0.001);"))
    api.migrate(settings)
    ident = "20250102000000_fill_b"
    write_migration(migrations_dir, ident, _fill(ident, "b", "a * 2"))
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    said: list[str] = []
    runner = threading.Thread(target=lambda: api.migrate(settings, progress=said.append))
    runner.start()
    wait_for(lambda: (_journal(task_db_url, ident) or ("", 0, 0))[2] > 0, "the first batch", timeout=60)
    paused = inv_process("deploy.pause", env=env)
    assert paused.returncode == 0 and "paused 1 backfill(s)" in paused.stdout, paused.stderr
    wait_for(lambda: any("held: paused by inv deploy.pause" in line for line in said), "the pause", timeout=60)
    before = _journal(task_db_url, ident)
    time.sleep(0.5)
    after = _journal(task_db_url, ident)
    assert before is not None and after is not None and before[1] == after[1] < rows and after[3] is True
    shown = inv_process("deploy.status", "--no-drift", env=env)
    assert "PAUSED" in shown.stdout and "held: paused" in shown.stdout, shown.stdout
    resumed = inv_process("deploy.resume", env=env)
    assert resumed.returncode == 0 and "resumed 1 backfill(s)" in resumed.stdout, resumed.stderr
    runner.join(timeout=120)
    assert not runner.is_alive()
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM items WHERE b IS DISTINCT FROM a * 2 OR writes <> 1") == (0,)
    assert (_journal(task_db_url, ident) or ())[:2] == ("done", rows)


def test_the_load_ceiling_holds_the_backfill_while_other_sessions_are_busy(task_db_url: DatabaseUrl,
                                                                           migrations_dir: Path,
                                                                           make_settings: Any) -> None:
    settings = make_settings(task_db_url, backfill_max_active=1)
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL.format(rows=2000, slow=""))
    api.migrate(settings)
    ident = "20250102000000_fill_b"
    write_migration(migrations_dir, ident, _fill(ident, "b", "a - 1"))
    busy = replace(task_db_url, params=(*task_db_url.params, ("application_name", "report query")))
    said: list[str] = []
    release = threading.Event()

    def report() -> None:
        with Database.connect(busy) as db:
            while not release.is_set():
                db.execute("SELECT pg_sleep(0.5)")

    worker = threading.Thread(target=report)
    worker.start()
    try:
        runner = threading.Thread(target=lambda: api.migrate(settings, progress=said.append))
        runner.start()
        held = wait_for(lambda: [line for line in said if "held:" in line], "the ceiling", timeout=60)
        assert "1 active sessions, at the ceiling of 1" in held[0], held
    finally:
        release.set()
        worker.join(timeout=10)
    runner.join(timeout=60)
    assert any("going again" in line for line in said), said
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM items WHERE b IS DISTINCT FROM a - 1") == (0,)


@pytest.mark.process
@pytest.mark.slow
def test_the_rename_benchmark_runs_clean_on_a_small_table(pg18: DatabaseUrl) -> None:
    import json
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "backfill.py"), "--rows", "20000", "--before", "0.3",
                           "--json", "--url", full_url(pg18)], cwd=ROOT, text=True, capture_output=True, timeout=240,
                          env=cli_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    report = json.loads(done.stdout)
    assert report["errors"] == {} and report["rows_correct"] is True and report["rows_per_s"] > 0
    assert report["latency"]["old"]["before"]["n"] > 0 and report["latency"]["new"]["complete"]["n"] > 0
