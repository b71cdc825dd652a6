"""What an operator does to a command, and what it must show: its output piped into a reader that
stops early, an --output that names a file the command must not overwrite, backups killed
half-written, and a lock too short for any sampling that the lock report must still show."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tasks._backup import size
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.conftest import write_migration


@pytest.mark.process
def test_status_into_a_closed_pipe_exits_quietly(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    for n in range(50):
        write_migration(migrations_dir, f"2025010100{n:04d}_m{n}", f"CREATE TABLE t{n} (id int);\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already stopped reading
    try:
        done = subprocess.run([INV, "status", "--no-drift"], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env=cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir)))
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr


def test_generate_refuses_to_write_over_a_file_it_did_not_write(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE users (id int PRIMARY KEY);\n")
    env = cli_env(task_db_url, ENVIRONMENT="development")
    done = inv_here("dev.generate", "--output", str(schema), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: refusing to overwrite {schema}: it is not a models module") \
        and done.stderr.count("\n") == 1, done.stderr
    assert schema.read_text() == "CREATE TABLE users (id int PRIMARY KEY);\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.sql"]  # no temporary file left either


def test_generate_replaces_its_own_module_through_a_rename(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    models = tmp_path / "models.py"
    env = cli_env(task_db_url, ENVIRONMENT="development")
    first = inv_here("dev.generate", "--output", str(models), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    before = models.stat().st_ino
    again = inv_here("dev.generate", "--output", str(models), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert models.stat().st_ino != before  # a new file renamed over the old, never rewritten in place
    assert models.read_text().startswith('"""SQLAlchemy models for database ')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.py"]


def _running(fragment: str) -> bool:
    """True while a process whose command line holds ``fragment`` runs (pg_dump names its file)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if fragment.encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


@pytest.mark.process
def test_a_killed_backups_partial_file_is_counted_then_swept_by_the_next_backup(
        db_url: DatabaseUrl, tmp_path: Path) -> None:
    with Database.connect(db_url) as db:  # enough to be caught half-written
        db.execute("CREATE TABLE big AS SELECT i, repeat(md5(i::text), 3) AS v FROM generate_series(1, 400000) i")
    folder = tmp_path / "backups"
    env = cli_env(db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_BACKUPS_DIR=str(folder))
    process = subprocess.Popen([INV, "dev.backup"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".partial") and p.stat().st_size > 0 for p in folder.glob(".*")):
            assert process.poll() is None and time.monotonic() < deadline, "never saw the backup half-written"
            time.sleep(0.002)
    finally:
        process.kill()
        process.wait()
    [partial] = folder.iterdir()
    deadline = time.monotonic() + 30
    while _running(partial.name):  # pg_dump dies with its parent
        assert time.monotonic() < deadline, "pg_dump outlived the killed backup"
        time.sleep(0.05)
    real = partial.stat().st_size
    assert real > 0

    production = {**env, "ENVIRONMENT": "production"}
    dry = inv_here("prod.cleanup", "--dry-run", env=production)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would remove {partial.name} ({size(real)}): left by an interrupted backup" in dry.stdout, dry.stdout
    assert f"would remove 1 file(s) that interrupted backups left, {size(real)}" in dry.stdout, dry.stdout
    as_json = json.loads(inv_here("prod.cleanup", "--dry-run", "--json", env=production).stdout)
    assert as_json["leftover_bytes"] == real and as_json["leftovers"] == [str(partial)]
    assert partial.exists()

    done = inv_here("dev.backup", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"note: removed 1 file(s) that interrupted backups had left in {folder} ({size(real)}): " \
           f"{partial.name}\n" in done.stderr, done.stderr
    assert not partial.exists()
    assert [p.suffix for p in sorted(folder.iterdir())] == [".dump", ".json"]


def test_a_live_backups_partial_file_is_left_alone(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    live = folder / f".backup_development_20260101_000000.dump.{os.getpid()}.ab12cd34.partial"
    live.write_bytes(b"x" * 100)
    done = inv_here("dev.backup", env=cli_env(task_db_url, ENVIRONMENT="development",
                                               INVOKE_PGSHIFT_BACKUPS_DIR=str(folder)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert live.exists() and "interrupted backups" not in done.stderr


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_the_lock_report_sees_a_short_access_exclusive_lock_in_every_run(server: DatabaseUrl,
                                                                          migrations_dir: Path) -> None:
    from pgshift.checks import performance
    from pgshift.migrations import apply, source

    write_migration(migrations_dir, "20250101000000_items", "CREATE TABLE items (id int PRIMARY KEY, name text);\n")
    write_migration(migrations_dir, "20250102000000_note", "ALTER TABLE items ADD COLUMN note text;\n")
    migrations = source.read(migrations_dir)
    for _run in range(3):
        report = performance.run(server, migrations, apply.Limits(), 200, performance.Thresholds(),
                                 {"20250101000000_items"})
        [measured] = report.measured
        assert measured.state == "ok", measured
        assert [(lock.table, lock.mode, lock.blocks) for lock in measured.locks] == [
            ("public.items", "AccessExclusiveLock", "reads and writes")], measured.locks


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_test_performance_shows_the_lock_of_an_added_column(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_items", "CREATE TABLE items (id int PRIMARY KEY, name text);\n")
    write_migration(migrations_dir, "20250102000000_note", "ALTER TABLE items ADD COLUMN note text;\n")
    env = cli_env(task_db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    assert inv_here("dev.migrate", "--to", "20250101000000_items", env=env).returncode == 0
    for task in ("test.performance", "test.large-dataset"):
        done = inv_here(task, "--rows", "100", "--json", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        [measured] = json.loads(done.stdout)["checks"][task.removeprefix("test.")]["measured"]
        assert {"table": "public.items", "mode": "AccessExclusiveLock"}.items() <= measured["locks"][0].items(), \
            measured


def test_rollback_list_says_what_it_checked_and_rechecks_the_size(db_url: DatabaseUrl, tmp_path: Path) -> None:
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE items AS SELECT i FROM generate_series(1, 1000) i")
    env = cli_env(db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"))
    assert inv_here("dev.backup", env=env).returncode == 0
    assert inv_here("dev.backup", env=env).returncode == 0
    cut, flipped = sorted((tmp_path / "backups").glob("*.dump"))
    listed = inv_here("rollback.list", env=env)
    assert listed.stdout.count("when written; size and ends ok now") == 2, listed.stdout

    real = cut.stat().st_size
    with cut.open("r+b") as handle:  # cut short after it was written
        handle.truncate(real - 100)
    with flipped.open("r+b") as handle:  # same size, its start overwritten
        handle.write(b"XXXXX")
    listed = inv_here("rollback.list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0].rsplit("/", 1)[-1]: line for line in listed.stdout.splitlines()[2:]}
    assert f"DAMAGED: size is {real - 100} bytes, the manifest says {real}" in lines[cut.name], listed.stdout
    assert "DAMAGED: its first bytes are not a pg_dump archive's" in lines[flipped.name], listed.stdout
    states = {Path(b["file"]).name: b["state"] for b in json.loads(inv_here("rollback.list", "--json", env=env).stdout)}
    assert states == {cut.name: "damaged", flipped.name: "damaged"}
    refused = inv_here("rollback.restore", cut.name, "--yes", env=env)
    assert refused.returncode != 0 and "is damaged (size is" in refused.stderr, refused.stderr


def test_the_restore_hint_for_an_edited_migration_works_from_the_repository_root(
        db_url: DatabaseUrl, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    folder = repo / "services" / "api" / "migrations"
    folder.mkdir(parents=True)
    ident = "20250101000000_create_users"
    write_migration(folder, ident, "create table users (id int);")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm",
                    "initial"], check=True)
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder))
    assert inv_here("dev.migrate", env=env).returncode == 0
    (folder / f"{ident}.sql").write_text("create table users (id bigint);")

    refused = inv_here("dev.migrate", env=env)
    assert refused.returncode == 1
    hint = refused.stderr.split("(git checkout -- ", 1)[1].split(")", 1)[0]
    assert hint == f"services/api/migrations/{ident}.sql"
    subprocess.run(["git", "checkout", "--", hint], cwd=repo, check=True)  # the hint, run where it says
    assert inv_here("dev.migrate", env=env).returncode == 0
