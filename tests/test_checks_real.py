"""The checks on histories written the way real projects write them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgshift.checks import backward, lint
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from pgshift.migrations.apply import Limits
from tests.conftest import write_migration


def test_lint_treats_a_table_made_earlier_in_the_same_pending_run_as_new(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_orders", "CREATE TABLE orders (id bigint PRIMARY KEY, x int);")
    write_migration(migrations_dir, "20240102000000_orders_x", "CREATE INDEX orders_x ON orders (x);")
    migrations = source.read(migrations_dir)
    pending = {m.id for m in migrations}
    assert lint.lint(migrations, only=pending).findings == []
    applied_first = lint.lint(migrations, only={migrations[1].id})
    assert [f.rule for f in applied_first.findings] == ["require-concurrent-index-creation"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_backward_accepts_a_rollback_that_re_adds_a_dropped_column_last(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_users", "CREATE TABLE users (id int PRIMARY KEY, nickname text, "
                    "email text);", "DROP TABLE users;")
    write_migration(migrations_dir, "20240102000000_drop_nickname", "ALTER TABLE users DROP COLUMN nickname;",
                    "ALTER TABLE users ADD COLUMN nickname text;")
    report = backward.run(db_url, source.read(migrations_dir), Limits())
    assert report.ok, report.summary()
    (trip,) = [t for t in report.trips if t.id == "20240102000000_drop_nickname"]
    assert trip.state == "ok" and trip.problem == backward.ORDER_NOTE  # said, as a note

    strict = backward.run(db_url, source.read(migrations_dir), Limits(), strict_order=True)
    assert not strict.ok
    (failed,) = [t for t in strict.trips if t.state == "failed"]
    assert failed.id == "20240102000000_drop_nickname" and "differs from before" in (failed.problem or "")


def test_inv_test_backward_strict_order_exits_1_and_plain_notes_it(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    from tests.commands import cli_env, inv_here

    write_migration(migrations_dir, "20240101000000_users", "create table users (id int primary key, nickname text, "
                    "email text);", "drop table users;")
    write_migration(migrations_dir, "20240102000000_drop_nickname", "alter table users drop column nickname;",
                    "alter table users add column nickname text;")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    plain = inv_here("test.backward", env=env)
    assert plain.returncode == 0 and "note: 20240102000000_drop_nickname.rollback.sql: column order" in plain.stdout
    assert inv_here("test.backward", "--strict-order", env=env).returncode == 1
