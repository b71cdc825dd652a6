"""dev.import --from prisma: a folder Prisma applied becomes ours, the database adopted as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests import prisma
from tests.commands import cli_env, inv_here


def _env(url: DatabaseUrl, migrations_dir: Path) -> dict[str, str]:
    return cli_env(url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_prisma_database_is_adopted_up_to_date_without_drift(db_url: DatabaseUrl, tmp_path: Path,
                                                               migrations_dir: Path) -> None:
    folder = prisma.write_folder(tmp_path)
    prisma.deploy(db_url, folder)
    env = _env(db_url, migrations_dir)
    done = inv_here("dev.import", "--from", "prisma", str(folder), "--reason", "moving off prisma", env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote 20 migration(s) from prisma" in done.stdout
    assert "recorded 20 as applied" in done.stdout
    assert "not converted: migration_lock.toml" in done.stdout
    for n, (name, sql) in enumerate(prisma.STEPS):  # byte for byte, CRLF included
        assert (migrations_dir / f"{prisma.folder_name(n, name)}.sql").read_bytes() == sql.encode()
    status = inv_here("dev.status", "--json", "--drift", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    found = json.loads(status.stdout)
    assert found["summary"].startswith("up to date: 20 applied"), found["summary"]
    assert found["drift"]["clean"], found["drift"]
    with Database.connect(db_url) as db:  # Prisma's table is left as it was
        assert db.one('SELECT count(*) FROM "_prisma_migrations" WHERE finished_at IS NOT NULL') == (20,)
        assert db.one("SELECT action, reason FROM pgshift.audit") == ("import", "moving off prisma")
    # the next migration, generated from schema.sql, applies on the adopted database
    schema = "".join(sql.replace("\r\n", "\n") for _, sql in prisma.STEPS if not sql.startswith("INSERT"))
    (migrations_dir.parent / "schema.sql").write_text(schema + 'ALTER TABLE "Tag" ADD COLUMN "color" text;\n')
    generated = inv_here("dev.migrate", "tag_color", env=env)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "applied 1 migration(s)" in generated.stdout
    new = next(migrations_dir.glob("*_tag_color.sql")).read_text()
    assert "color" in new and "_prisma_migrations" not in new
    again = json.loads(inv_here("dev.status", "--json", "--drift", env=env).stdout)
    assert again["summary"].startswith("up to date: 21 applied") and again["drift"]["clean"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_rollbacks_are_generated_and_round_trip(db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path) -> None:
    folder = prisma.write_folder(tmp_path, prisma.STEPS[:5])
    prisma.deploy(db_url, folder)
    done = inv_here("dev.import", "--from", "prisma", str(folder), env=_env(db_url, migrations_dir))
    assert done.returncode == 0, done.stderr
    assert "generated 5 rollback file(s)" in done.stdout
    first = (migrations_dir / f"{prisma.folder_name(0, 'init')}.rollback.sql").read_text()
    assert 'drop table "public"."User"' in first.lower() or 'drop table "public"."user"' in first.lower()
    back = inv_here("test.backward", env=_env(db_url, migrations_dir))
    assert back.returncode == 0, back.stdout + back.stderr


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_failed_and_rolled_back_prisma_rows_are_not_recorded(db_url: DatabaseUrl, tmp_path: Path,
                                                             migrations_dir: Path) -> None:
    folder = prisma.write_folder(tmp_path, prisma.STEPS[:6])
    (folder / prisma.folder_name(1, "add_post") / "README.md").write_text("notes\n")
    prisma.deploy(db_url, folder, rolled_back=prisma.folder_name(3, "post_body"),
                  failed=prisma.folder_name(5, "seed_admin"))
    done = inv_here("dev.import", "--from", "prisma", str(folder), "--json", env=_env(db_url, migrations_dir))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len(found["adopted"]) == 4
    assert any(line.startswith(prisma.folder_name(3, "post_body")) and "rolled back" in line
               for line in found["not_applied"])
    assert [line.split(":")[0] for line in found["failed"]] == [prisma.folder_name(5, "seed_admin")]
    assert any("README.md: only migration.sql is converted" in line for line in found["not_converted"])
    status = inv_here("dev.status", "--json", env=_env(db_url, migrations_dir))
    states = {m["id"]: m["state"] for m in json.loads(status.stdout)["migrations"]}
    assert states[prisma.folder_name(3, "post_body")] == "pending"
    assert states[prisma.folder_name(5, "seed_admin")] == "pending"


def test_an_edited_file_in_the_way_stops_the_import(db_url: DatabaseUrl, tmp_path: Path,
                                                    migrations_dir: Path) -> None:
    folder = prisma.write_folder(tmp_path, prisma.STEPS[:2])
    (migrations_dir / f"{prisma.folder_name(0, 'init')}.sql").write_text("SELECT 1;\n")
    done = inv_here("dev.import", "--from", "prisma", str(folder), env=_env(db_url, migrations_dir))
    assert done.returncode == 2
    assert "exists with other content" in done.stderr
    with Database.connect(db_url) as db:
        assert not db.has_relation("pgshift.migrations")
