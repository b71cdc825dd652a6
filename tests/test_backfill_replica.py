"""The backfill against a real streaming replica: held while its replay lags, going on once it replays."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.conftest import write_migration
from tests.helpers import wait_for
from tests.replica import STANDBY_NAME, Pair, streaming_pair

ROWS = 200_000
TABLE_SQL = f"""
CREATE TABLE items (id bigint PRIMARY KEY, a integer NOT NULL);
INSERT INTO items SELECT g, g FROM generate_series(1, {ROWS}) g;
"""
FILL = """-- pgshift: expand
ALTER TABLE items ADD COLUMN b bigint;
-- pgshift: backfill items SET b = a * 2
-- pgshift: abort
ALTER TABLE items DROP COLUMN b;
"""


def _throttled(url: DatabaseUrl) -> tuple[Any, ...] | None:
    with Database.connect(url) as db:
        if not db.has_relation("pgshift.backfills"):
            return None
        return db.one("SELECT state, rows_done, throttled FROM pgshift.backfills")


@pytest.fixture
def replica() -> Iterator[Pair]:
    """A throwaway primary with a streaming standby."""
    with streaming_pair() as pair:
        yield pair


@pytest.mark.slow
@pytest.mark.process
def test_replay_lag_over_the_ceiling_holds_the_backfill_until_the_replica_replays(
        replica: Pair, migrations_dir: Path, make_settings: Any) -> None:
    name = throwaway.name("test", "replica")
    with Database.connect(replica.primary) as admin:
        throwaway.create(admin, name)
    url = replica.primary.with_dbname(name)
    # Small batches, so the backfill writes WAL for a while: enough for the lag to show.
    settings = make_settings(url, backfill_max_replay_lag=0.5, backfill_batch_seconds=0.005)
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL)
    api.migrate(settings)
    with Database.connect(replica.standby) as standby:
        wait_for(lambda: standby.one("SELECT count(*) FROM pg_database WHERE datname = %s", [name]) == (1,),
                 "the standby to have the table", timeout=90)
        standby.execute("SELECT pg_wal_replay_pause()")
        ident = "20250102000000_fill_b"
        write_migration(migrations_dir, ident, FILL)
        said: list[str] = []
        failure: list[BaseException] = []

        def migrate() -> None:
            try:
                api.migrate(settings, progress=said.append)
            except BaseException as error:  # handed to the test's thread
                failure.append(error)

        runner = threading.Thread(target=migrate)
        runner.start()
        try:
            held = wait_for(lambda: [line for line in said if "held:" in line], "the lag to hold the backfill",
                            timeout=90)
            assert "replica lag" in held[0] and STANDBY_NAME in held[0] and "0.5 s limit" in held[0], held
            journal = _throttled(url)
            assert journal is not None and journal[0] == "running" and journal[1] < ROWS, journal
            assert journal[2] is not None and "replica lag" in journal[2], journal
            status = api.deploy_status(settings, drift=False)
            shown = [f.throttled for w in status.windows for f in w.backfills]
            assert shown and shown[0] is not None and "replica lag" in shown[0], shown
            time.sleep(1.0)
            stalled = _throttled(url)
            assert stalled is not None and stalled[1] == journal[1], "the backfill went on while held"
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
        runner.join(timeout=120)
    assert not runner.is_alive() and not failure, failure
    assert any("going again" in line for line in said), said
    finished = _throttled(url)
    assert finished is not None and finished[:2] == ("done", ROWS) and finished[2] is None, finished
    with Database.connect(url) as db:
        assert db.one("SELECT count(*) FROM items WHERE b IS DISTINCT FROM a * 2") == (0,)
