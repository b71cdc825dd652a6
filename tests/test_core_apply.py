"""Applying migrations on real servers: records, failures, checksums, non-transactional journaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ChecksumMismatch, ExitCode, MigrationError
from pgshift.migrations import history, source
from tests.conftest import write_migration


def tables(url: DatabaseUrl) -> set[str]:
    with Database.connect(url) as db:
        return {r[0] for r in db.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_applies_in_order_and_records_each(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int PRIMARY KEY);")
    write_migration(migrations_dir, "20250102000000_b", "CREATE TABLE b (a_id int REFERENCES a);")
    result = api.migrate(make_settings(db_url))
    assert [a.id for a in result.result.applied] == ["20250101000000_a", "20250102000000_b"]
    assert tables(db_url) == {"a", "b"}
    status = api.status(make_settings(db_url))
    assert [m.state for m in status.migrations] == ["applied", "applied"]
    assert status.exit_code == ExitCode.OK
    assert status.head == "20250102000000_b"


def test_failed_migration_leaves_nothing_and_names_file_and_line(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    write_migration(migrations_dir, "20250102000000_b",
                    "-- two statements, the second fails\nCREATE TABLE b (id int);\n\nINSERT INTO nope VALUES (1);\n")
    with pytest.raises(MigrationError) as caught:
        api.migrate(make_settings(db_url))
    message = str(caught.value)
    assert "20250102000000_b.sql, line 4" in message
    assert 'relation "nope" does not exist' in message
    assert "INSERT INTO nope" in message
    assert tables(db_url) == {"a"}  # b's first statement was rolled back with it
    states = {m.id: m.state for m in api.status(make_settings(db_url)).migrations}
    assert states == {"20250101000000_a": "applied", "20250102000000_b": "failed"}


def test_syntax_error_is_reported_with_line(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);\nCREAT TABLE b (id int);\n")
    with pytest.raises(MigrationError, match=r"20250101000000_a.sql, line 2: syntax error"):
        api.migrate(make_settings(db_url))
    assert tables(db_url) == set()


def test_edited_applied_migration_is_refused(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    path = write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);\n")
    api.migrate(make_settings(db_url))
    path.write_text("CREATE TABLE a (id bigint);\n")
    write_migration(migrations_dir, "20250102000000_b", "CREATE TABLE b (id int);")
    with pytest.raises(ChecksumMismatch, match=r"20250101000000_a\.sql was edited after it was applied"):
        api.migrate(make_settings(db_url))
    assert tables(db_url) == {"a"}
    assert [m.state for m in api.status(make_settings(db_url)).migrations] == ["modified", "pending"]


def test_line_endings_and_bom_are_not_an_edit(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    path = write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);\nSELECT 1;\n")
    api.migrate(make_settings(db_url))
    path.write_bytes(b"\xef\xbb\xbfCREATE TABLE a (id int);\r\nSELECT 1;\r\n")
    assert api.status(make_settings(db_url)).exit_code == ExitCode.OK


def test_missing_file_is_reported(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    path = write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    api.migrate(make_settings(db_url))
    path.unlink()
    status = api.status(make_settings(db_url))
    assert [(m.id, m.state) for m in status.migrations] == [("20250101000000_a", "missing")]
    assert status.exit_code == ExitCode.FAILED


def test_the_unwritten_template_is_pending_and_never_applied(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    made = source.create(migrations_dir, "add_things")
    result = api.migrate(make_settings(db_url))
    assert result.result.applied == [] and result.result.empty == [made.id]
    status = api.status(make_settings(db_url))
    assert [(m.state, m.empty) for m in status.migrations] == [("pending", True)]
    assert status.exit_code == ExitCode.PENDING


def test_concurrent_index_runs_outside_a_transaction_and_is_journaled(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int, v text);")
    write_migration(migrations_dir, "20250102000000_idx",
                    "CREATE INDEX CONCURRENTLY a_v_idx ON a (v);\nALTER TABLE a ADD COLUMN w int;\n")
    result = api.migrate(make_settings(db_url))
    assert [a.transactional for a in result.result.applied] == [True, False]
    with Database.connect(db_url) as db:
        assert db.one("SELECT indisvalid FROM pg_index WHERE indexrelid = 'a_v_idx'::regclass") == (True,)
        rec = history.records(db)["20250102000000_idx"]
    assert (rec.state, rec.statements_done, rec.statements_total) == ("applied", 2, 2)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_non_transactional_failure_resumes_where_it_stopped(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int, v text);")
    path = write_migration(migrations_dir, "20250102000000_idx",
                           "CREATE INDEX CONCURRENTLY a_v_idx ON a (v);\nALTER TABLE nope ADD COLUMN w int;\n")
    with pytest.raises(MigrationError, match=r"line 2: .*statements 1-1 of 2 stay applied"):
        api.migrate(make_settings(db_url))
    status = api.status(make_settings(db_url))
    assert status.migrations[1].state == "failed"
    assert "stopped after statement 1 of 2" in (status.migrations[1].detail or "")
    path.write_text("CREATE INDEX CONCURRENTLY a_v_idx ON a (v);\nALTER TABLE a ADD COLUMN w int;\n")
    api.migrate(make_settings(db_url))
    assert api.status(make_settings(db_url)).exit_code == ExitCode.OK


def test_transaction_control_in_a_migration_is_refused(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);")
    with pytest.raises(MigrationError, match=r"line 2: COMMIT is not allowed"):
        api.migrate(make_settings(db_url))
    assert tables(db_url) == set()


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_lock_timeout_retries_then_names_the_blocker(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    api.migrate(make_settings(db_url))
    write_migration(migrations_dir, "20250102000000_b", "ALTER TABLE a ADD COLUMN v int;")
    with Database.connect(db_url) as blocker:
        blocker.execute("BEGIN; LOCK TABLE a IN ACCESS SHARE MODE; SELECT 'blocking-session'")
        with pytest.raises(Exception, match=rf"blocked by pid {blocker.pid}") as caught:
            api.migrate(make_settings(db_url, lock_timeout=0.3, lock_retries=2, retry_backoff=0.1))
        assert "2 attempts" not in str(caught.value) and "3 attempts" in str(caught.value)
        blocker.execute("ROLLBACK")
    api.migrate(make_settings(db_url))
    assert [m.state for m in api.status(make_settings(db_url)).migrations] == ["applied", "applied"]


def test_migration_lock_holder_is_named(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    from pgshift.errors import LockTimeout
    from pgshift.migrations.lock import LOCK_ID, LOCK_NAMESPACE

    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    with Database.connect(db_url) as other:
        other.rows("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, LOCK_ID])
        with pytest.raises(LockTimeout, match=rf"another migration holds the lock: pid {other.pid} \(pgshift"):
            api.migrate(make_settings(db_url, lock_wait=0.3))
    api.migrate(make_settings(db_url))
    assert tables(db_url) == {"a"}
