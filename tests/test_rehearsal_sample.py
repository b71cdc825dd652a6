"""A rehearsal of a database the application is connected to: no template copy is possible, so the
clone holds the schema and a sample of each table's rows (the migration history whole), and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import history
from tests.backups import schema_text
from tests.conftest import write_migration
from tests.deploys import M1, M2, apply_first, production, run_deploy, write_set
from tests.slack import SlackStub

SCHEMA = """
CREATE TABLE parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE child (id serial PRIMARY KEY, parent_id bigint REFERENCES parent, twice int GENERATED ALWAYS AS
                    (id * 2) STORED, note text CHECK (note <> ''));
CREATE INDEX child_parent ON child (parent_id);
CREATE TABLE node (id int PRIMARY KEY, up int REFERENCES node);
CREATE TABLE ev (at date NOT NULL, n int) PARTITION BY RANGE (at);
CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'touched'; RETURN NEW; END $$;
CREATE TRIGGER child_touch BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION touch();
CREATE MATERIALIZED VIEW parent_count AS SELECT count(*) AS n FROM parent;
INSERT INTO parent (name) SELECT 'p' || g FROM generate_series(1, 500) g;
INSERT INTO child (parent_id, note) SELECT 1 + (g * 7) % 500, CASE WHEN g % 3 = 0 THEN NULL ELSE 'x' END
FROM generate_series(1, 400) g;
INSERT INTO node SELECT g, CASE WHEN g > 1 THEN g - 1 END FROM generate_series(1, 300) g;
INSERT INTO ev SELECT DATE '2024-06-01' + g, g FROM generate_series(1, 400) g;
"""


def counts(db: Database, *tables: str) -> dict[str, int]:
    return {t: int((db.one(f"SELECT count(*) FROM {t}") or (0,))[0]) for t in tables}


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_database_in_use_is_cloned_as_its_schema_and_a_sample(db_url: DatabaseUrl, migrations_dir: Path,
                                                                 make_settings: Any) -> None:
    settings = make_settings(db_url)
    for n in range(1, 151):  # more history than the sample: it must come whole
        write_migration(migrations_dir, f"2025010100{n:04d}_m{n}", "SELECT 1;" if n > 1 else SCHEMA)
    api.migrate(settings)
    with Database.connect(db_url) as application, \
            throwaway.clone_or_sample(db_url.with_dbname("postgres"), db_url.dbname, sample_rows=100,
                                      whole=(history.SCHEMA,)) as made, \
            Database.connect(made.url) as clone:
        assert application.one("SELECT 1") == (1,)
        assert made.sample_rows == 100 and made.sampled >= 4
        assert schema_text(made.url) == schema_text(db_url)
        found = counts(clone, "parent", "child", "node", "ev_2024", "ev_2025", history.TABLE)
        assert found["parent"] == 100 and found[history.TABLE] == 150
        assert 0 < found["child"] <= 100 and 0 < found["node"] <= 100 and found["ev_2024"] + found["ev_2025"] <= 200
        # every sampled child's parent came along (the foreign keys were created, so validated)
        assert clone.one("SELECT count(*) FROM child c LEFT JOIN parent p ON p.id = c.parent_id "
                         "WHERE c.parent_id IS NOT NULL AND p.id IS NULL") == (0,)
        # sequences where they were, so new rows do not collide with sampled ones
        sequence = "SELECT last_value FROM child_id_seq"
        assert clone.one(sequence) == application.one(sequence)
        assert clone.one("SELECT n FROM parent_count") == (100,)
        clone.execute("INSERT INTO parent (name) VALUES ('new')")
        assert clone.one("SELECT max(id) FROM parent") == (501,)


def test_a_database_nobody_uses_is_still_copied_whole(task_db_url: DatabaseUrl) -> None:
    with Database.connect(task_db_url) as db:
        db.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 300) g")
    with throwaway.clone_or_sample(task_db_url.with_dbname("postgres"), task_db_url.dbname,
                                   sample_rows=10) as made, Database.connect(made.url) as clone:
        assert made.sample_rows == 0 and counts(clone, "t") == {"t": 300}


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_deploy_with_the_application_connected_rehearses_on_a_sample_and_says_so(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    settings = production(db_url, make_settings, stub, rehearsal_sample_rows=2)
    apply_first(settings)
    lines: list[str] = []
    with Database.connect(db_url) as application:
        application.execute("BEGIN")
        application.rows("SELECT count(*) FROM items")  # an open transaction, as an application keeps
        application.execute("COMMIT")
        report = run_deploy(settings, lines, rehearse=True)
        assert application.one("SELECT 1") == (1,)  # the rehearsal left the application's session alone
    assert report.outcome == "succeeded" and [a.id for a in report.applied] == [M2]
    assert report.rehearsal is not None and report.rehearsal.ok and report.rehearsal.sample_rows == 2
    assert "rehearsal passed on a sample of" in report.rehearsal.summary()
    said = "\n".join(lines)
    assert "at most 2 rows per table" in said and "rehearsed on a sample" in said
    with Database.connect(db_url) as db:
        assert list(history.records(db)) == [M1, M2]
        assert db.one("SELECT count(*) FROM items") == (3,)  # the target's rows untouched by the sample
