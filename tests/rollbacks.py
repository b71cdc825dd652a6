"""A history that mixes transactional rollbacks with ones that must run statement by statement
(``DROP INDEX CONCURRENTLY``), and how to tell each migration's effect in the database."""

from __future__ import annotations

from pathlib import Path

from pgshift.databases.db import Database
from tests.conftest import write_migration

BASE, INDEXES, COLUMN, MIXED = ("20250101000000_base", "20250102000000_indexes", "20250103000000_column",
                                "20250104000000_mixed")

# Each rollback statement, in order, with the object it removes (checked by ``present``).
REMOVES = {
    INDEXES: ["index public.t_b", "index public.t_a"],
    COLUMN: ["column c"],
    MIXED: ["index public.t_d", "column d"],
}


def write(folder: Path) -> None:
    write_migration(folder, BASE, "CREATE TABLE t (id int PRIMARY KEY, a int, b int);\n"
                    "INSERT INTO t SELECT g, g % 10, g % 7 FROM generate_series(1, 1000) g;", "DROP TABLE t;")
    write_migration(folder, INDEXES, "CREATE INDEX CONCURRENTLY t_a ON t (a);\nCREATE INDEX CONCURRENTLY t_b ON t (b);",
                    "DROP INDEX CONCURRENTLY t_b;\nDROP INDEX CONCURRENTLY t_a;\n")
    write_migration(folder, COLUMN, "ALTER TABLE t ADD COLUMN c text;", "ALTER TABLE t DROP COLUMN c;")
    write_migration(folder, MIXED, "ALTER TABLE t ADD COLUMN d int;\nCREATE INDEX CONCURRENTLY t_d ON t (d);",
                    "DROP INDEX CONCURRENTLY t_d;\nALTER TABLE t DROP COLUMN d;\n")


def present(db: Database, what: str) -> bool:
    kind, name = what.split(" ", 1)
    if kind == "index":
        return db.has_relation(name)
    row = db.one("SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = %s "
                 "AND NOT attisdropped", [name])
    return bool(row and row[0])


def check_consistent(db: Database) -> None:
    """Every migration's record exists exactly when its effect does; one stopped half-way has its record
    and a journal whose first ``done`` statements are undone and whose later ones are not."""
    records = {r[0] for r in db.rows("SELECT id FROM pgshift.migrations WHERE state = 'applied'")}
    journal = dict(db.rows("SELECT id, statements_done FROM pgshift.rollbacks")) if db.has_relation(
        "pgshift.rollbacks") else {}
    assert len(journal) <= 1, journal
    assert BASE in records
    for ident, removes in REMOVES.items():
        effects = [present(db, what) for what in removes]
        if ident in journal:
            done = journal[ident]
            assert ident in records, f"{ident} journaled half-way but its record is gone"
            assert not any(effects[:done]), (ident, done, effects)
            assert all(effects[done + 1:]), (ident, done, effects)
        elif ident in records:
            assert all(effects), f"{ident} is recorded but its effect is (partly) gone: {effects}"
        else:
            assert not any(effects), f"{ident} has no record but its effect is there: {effects}"
    invalid = db.rows("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
    pending_drop = [w.split(" ", 1)[1] for i in journal for w in REMOVES[i]]
    assert all(f"public.{name}" in pending_drop for (name,) in invalid), invalid
