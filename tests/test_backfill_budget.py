"""The phases' lock budget: an expand and a backfill batch wait phase_lock_timeout per try, and retry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import LockTimeout
from tests.conftest import write_migration

TABLE_SQL = """
CREATE TABLE items (id bigint PRIMARY KEY, a integer NOT NULL);
INSERT INTO items SELECT g, g FROM generate_series(1, 500) g;
"""
FILL_ID = "20250102000000_fill_b"
FILL = """-- pgshift: expand
ALTER TABLE items ADD COLUMN b bigint;
-- pgshift: backfill items SET b = a + 1
-- pgshift: abort
ALTER TABLE items DROP COLUMN b;
"""


def _settings(make_settings: Any, url: DatabaseUrl) -> Any:
    # lock_timeout 1 s and 1 retry for ordinary migrations (the fixture's); the phases' own budget here
    return make_settings(url, phase_lock_timeout=0.15, phase_lock_retries=2, retry_backoff=0.05)


def test_an_expand_waits_the_phase_lock_timeout_per_try_and_retries(db_url: DatabaseUrl, migrations_dir: Path,
                                                                    make_settings: Any) -> None:
    settings = _settings(make_settings, db_url)
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL)
    api.migrate(settings)
    write_migration(migrations_dir, FILL_ID, FILL)
    with Database.connect(db_url) as holder:
        holder.execute("BEGIN; LOCK TABLE items IN ACCESS SHARE MODE")  # an application's open read
        with pytest.raises(LockTimeout) as raised:
            api.migrate(settings)
        holder.execute("ROLLBACK")
    assert "could not get a table lock within 0.15s, 3 attempts" in str(raised.value), raised.value
    api.migrate(settings)
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM items WHERE b IS DISTINCT FROM a + 1") == (0,)


def test_a_batch_waits_for_a_row_the_phase_lock_timeout_per_try_and_resumes(db_url: DatabaseUrl,
                                                                            migrations_dir: Path,
                                                                            make_settings: Any) -> None:
    settings = _settings(make_settings, db_url)
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL)
    api.migrate(settings)
    write_migration(migrations_dir, FILL_ID, FILL)
    with Database.connect(db_url) as holder:
        def progress(line: str) -> None:  # once the expand is in: an application's write holds a row
            if line.startswith(f"applied {FILL_ID}"):
                holder.execute("BEGIN; SELECT * FROM items WHERE id = 7 FOR UPDATE")

        with pytest.raises(LockTimeout) as raised:
            api.migrate(settings, progress=progress)
        holder.execute("ROLLBACK")
    message = str(raised.value)
    assert f"backfill {FILL_ID} step 1 (items): could not get a table lock within 0.15s, 3 attempts" in message
    assert "the backfill stopped after 0 rows" in message, message
    api.migrate(settings)  # the expand is applied: this run resumes the backfill
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM items WHERE b IS DISTINCT FROM a + 1") == (0,)
        assert db.one("SELECT state, rows_done FROM pgshift.backfills WHERE id = %s", [FILL_ID]) == ("done", 500)
