"""Bad input as a user gives it: one line on stderr that names the problem and the next step, the
documented exit code (2 for usage and configuration), never a traceback, and nothing changed.

New cases go here, in the table they fit: ``NO_SERVER`` for what fails before any connection,
``ON_A_SERVER`` for what needs a database (run on both servers), the tests after them for the rest.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from pgshift.databases import dump, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, inv_here, inv_process
from tests.conftest import write_migration

LATIN1 = b"CREATE TABLE caf\xe9 (id int);\n"  # Latin-1: the byte 0xE9 is no UTF-8


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- before any connection ---------------------------------------------------------------------------


class Early(NamedTuple):
    args: tuple[str, ...]
    env: dict[str, str]
    code: int
    fragments: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...] = ()  # written under tmp_path first; "{tmp}" in args and env is tmp_path


STAGING = {"ENVIRONMENT": "staging", "DATABASE_URL": "postgresql://app@127.0.0.1:1/app"}

NO_SERVER: dict[str, Early] = {
    # the table
    "lock-timeout-not-a-number": Early(("status",), {"INVOKE_PGSHIFT_LOCK_TIMEOUT": "abc"}, 2,
                                       ("config pgshift.lock_timeout='abc' is not a number of seconds",)),
    "preflight-drift-not-yes-or-no": Early(("status",), {"INVOKE_PGSHIFT_PREFLIGHT_DRIFT": "maybe"}, 2,
                                           ("preflight_drift='maybe' is not a yes/no value", "true/false")),
    "invoke-yaml-invalid": Early(("-f", "{tmp}/invoke.yaml", "status"), {}, 2,
                                 ("invoke.yaml, line 3, column 1: not valid YAML", "fix the file"),
                                 (("invoke.yaml", b"pgshift:\n  lock_timeout: [1\n"),)),
    "unknown-task-option": Early(("dev.migrate", "--frobnicate"), {}, 2,
                                 ("No idea what '--frobnicate' is!", "inv --help dev.migrate")),
    "staging-dev-reset": Early(("dev.reset",), STAGING, 2, ("dev tasks work on development only", "use inv deploy")),
    "restore-without-file": Early(("rollback.restore",), {}, 2,
                                  ("'rollback.restore' did not receive", "usage: inv rollback.restore FILE",
                                   "inv rollback.list")),
    # further cases
    "environment-typo": Early(("status",), {"ENVIRONMENT": "prodution"}, 2,
                              ("ENVIRONMENT='prodution' is not known (did you mean production?)",)),
    "environment-capitalised": Early(("status",), {"ENVIRONMENT": "Staging"}, 2, ("did you mean staging?",)),
    "skip-backup-maybe": Early(("status",), {"SKIP_BACKUP": "maybe"}, 2,
                               ("SKIP_BACKUP='maybe' is not a yes/no value", "true/false")),
    "skip-maintenance-2": Early(("status",), {"SKIP_MAINTENANCE": "2"}, 2, ("SKIP_MAINTENANCE='2'",)),
    "database-url-empty-in-staging": Early(("status",), {"ENVIRONMENT": "staging", "DATABASE_URL": " "}, 2,
                                           ("DATABASE_URL is set but empty", "postgresql://")),
    "database-url-bad-port": Early(("status",), {"DATABASE_URL": "postgresql://u:topsecret@h:99999/x"}, 2,
                                   ("DATABASE_URL",)),
    "setting-name-typo": Early(("status",), {"INVOKE_PGSHIFT_LOCK_TIMOUT": "3"}, 2,
                               ("INVOKE_PGSHIFT_LOCK_TIMOUT is not a setting",
                                "did you mean INVOKE_PGSHIFT_LOCK_TIMEOUT?")),
    "retries-not-whole": Early(("status",), {"INVOKE_PGSHIFT_LOCK_RETRIES": "2.5"}, 2,
                               ("lock_retries='2.5' is not a whole number",)),
    "lock-wait-negative": Early(("status",), {"INVOKE_PGSHIFT_LOCK_WAIT": "-1"}, 2,
                                ("lock_wait='-1' must be a number of seconds 0 or more",)),
    "backup-format-unknown": Early(("status",), {"INVOKE_PGSHIFT_BACKUP_FORMAT": "tar"}, 2,
                                   ("backup_format='tar' is not one of: custom, plain",)),
    "sequence-limit-a-percentage": Early(("status",), {"INVOKE_PGSHIFT_SEQUENCE_LIMIT": "75"}, 2,
                                         ("sequence_limit='75' is not a share above 0 and at most 1",)),
    "migrations-dir-is-a-file": Early(("status",), {"INVOKE_PGSHIFT_MIGRATIONS_DIR": "{tmp}/m"}, 2,
                                      ("is a file, not a folder",), (("m", b"not a folder"),)),
    "slack-url-not-http": Early(("status",), {"SLACK_WEBHOOK_URL": "hooks.slack.com/services/T0/B0/topsecret"}, 2,
                                ("SLACK_WEBHOOK_URL is not an http:// or https:// URL",)),
    "yaml-not-a-mapping": Early(("-f", "{tmp}/c.yaml", "status"), {}, 2, ("holds a list, not a mapping",),
                                (("c.yaml", b"- lock_timeout\n"),)),
    "yaml-pgshift-not-a-mapping": Early(("-f", "{tmp}/c.yaml", "status"), {}, 2, ("pgshift must hold key: value",),
                                        (("c.yaml", b"pgshift: 5\n"),)),
    "yaml-not-utf8": Early(("-f", "{tmp}/c.yaml", "status"), {}, 2, ("is not UTF-8", "save the file as UTF-8"),
                           (("c.yaml", b"pgshift:\n  main_branch: caf\xe9\n"),)),
    "yaml-key-typo": Early(("-f", "{tmp}/c.yaml", "status"), {}, 2,
                           ("unknown config key pgshift.lock_timout (did you mean lock_timeout?)",),
                           (("c.yaml", b"pgshift:\n  lock_timout: 3\n"),)),
    "yaml-number-is-a-word": Early(("-f", "{tmp}/c.yaml", "status"), {}, 2, ("hook_timeout=True",),
                                   (("c.yaml", b"pgshift:\n  hook_timeout: yes\n"),)),
    "env-over-a-typed-yaml-number": Early(("status",), {"HOME": "{tmp}", "INVOKE_PGSHIFT_LOCK_TIMEOUT": "abc"}, 2,
                                          ("lock_timeout='abc' is not a number of seconds",),
                                          ((".invoke.yaml", b"pgshift:\n  lock_timeout: 1.0\n"),)),
    "env-over-a-typed-yaml-boolean": Early(("status",), {"HOME": "{tmp}", "INVOKE_PGSHIFT_PREFLIGHT_DRIFT": "maybe"},
                                           2, ("preflight_drift='maybe' is not a yes/no value",),
                                           ((".invoke.yaml", b"pgshift:\n  preflight_drift: true\n"),)),
    "unknown-core-option": Early(("--frobnicate",), {}, 2, ("No idea what '--frobnicate' is!", "inv --list")),
    "rows-not-a-number": Early(("test.performance", "--rows", "abc"), {}, 2,
                               ("--rows 'abc' is not a whole number", "inv --help test.performance")),
    "rows-not-a-number-with-equals": Early(("test.performance", "--rows=abc"), {}, 2, ("--rows 'abc'",)),
    "rows-negative": Early(("test.performance", "--rows", "-5"), {}, 2, ("--rows -5 is negative", "--rows 100000")),
    "rollback-to-without-id": Early(("rollback.to",), {}, 2, ("usage: inv rollback.to ID",)),
    "mark-without-id": Early(("dev.mark",), {}, 2, ("usage: inv dev.mark ID",)),
    "import-unknown-tool": Early(("dev.import", "--from", "flyway", "{tmp}"), {}, 2,
                                 ("--from 'flyway' is not supported", "prisma, yoyo")),
    "import-missing-folder": Early(("dev.import", "{tmp}/nowhere"), {}, 2, ("nowhere is not a folder",)),
    "prod-task-outside-production": Early(("prod.status",), STAGING, 2, ("need ENVIRONMENT=production",)),
    "refused-port": Early(("status",), {"DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/x"}, 1,
                          ("cannot reach PostgreSQL at 127.0.0.1:1",)),
}
IN_A_PROCESS = ("lock-timeout-not-a-number", "invoke-yaml-invalid", "unknown-task-option", "rows-not-a-number",
                "environment-typo", "restore-without-file")


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def _early_params() -> list[object]:
    params: list[object] = [pytest.param(name, inv_here, id=name) for name in NO_SERVER]
    params += [pytest.param(name, inv_process, id=f"{name}-process", marks=pytest.mark.process)
               for name in IN_A_PROCESS]
    return params


@pytest.mark.parametrize(("name", "run"), _early_params())
def test_bad_input_before_any_connection(name: str, run: Callable[..., subprocess.CompletedProcess[str]],
                                         tmp_path: Path) -> None:
    case = NO_SERVER[name]
    for file, content in case.files:
        (tmp_path / file).write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    env = cli_env(**{k: _fill(v, tmp_path) for k, v in case.env.items()})
    done = run(*(_fill(a, tmp_path) for a in case.args), env=env)
    assert_one_line(done, case.code, *case.fragments)
    assert "topsecret" not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# -- on a database, on both servers ------------------------------------------------------------------


class Work(NamedTuple):
    url: DatabaseUrl
    migrations: Path
    backups: Path

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(self.url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(self.migrations),
                       INVOKE_PGSHIFT_BACKUPS_DIR=str(self.backups), INVOKE_PGSHIFT_LOGS_DIR=str(self.backups.parent),
                       SKIP_BACKUP="1", **extra)


def fingerprint(work: Work) -> tuple[object, ...]:
    """What a refused command must leave as it was: the files and the database's tables and records."""
    with Database.connect(work.url) as db:
        tables = db.rows("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2")
        records = db.rows("SELECT id, state, statements_done FROM pgshift.migrations ORDER BY id") \
            if db.has_relation("pgshift.migrations") else []
    files = sorted(str(p.relative_to(work.migrations.parent)) for p in work.migrations.parent.rglob("*"))
    return tuple(tables), tuple(records), tuple(files)


def _latin1_migration(work: Work) -> tuple[str, ...]:
    (work.migrations / "20250101000000_cafe.sql").write_bytes(LATIN1)
    return ("dev.migrate",)


def _latin1_status(work: Work) -> tuple[str, ...]:
    (work.migrations / "20250101000000_cafe.sql").write_bytes(LATIN1)
    return ("status",)


def _latin1_rollback(work: Work) -> tuple[str, ...]:
    write_migration(work.migrations, "20250101000000_cafe", "CREATE TABLE cafe (id int);\n")
    (work.migrations / "20250101000000_cafe.rollback.sql").write_bytes(b"DROP TABLE caf\xe9;\n")
    return ("test.backward",)


def _latin1_schema(work: Work) -> tuple[str, ...]:
    (work.migrations.parent / "schema.sql").write_bytes(LATIN1)
    return ("dev.migrate", "add_cafe")


def _badly_named(work: Work) -> tuple[str, ...]:
    (work.migrations / "2025_add_things.sql").write_text("CREATE TABLE things (id int);\n")
    return ("dev.migrate",)


def _orphan_rollback(work: Work) -> tuple[str, ...]:
    (work.migrations / "20250101000000_gone.rollback.sql").write_text("DROP TABLE gone;\n")
    return ("status",)


def _mark_unknown(work: Work) -> tuple[str, ...]:
    return ("dev.mark", "20990101000000_nothing", "--applied")


def _rollback_to_unknown(work: Work) -> tuple[str, ...]:
    return ("rollback.to", "20990101000000_nothing")


def _restore_missing(work: Work) -> tuple[str, ...]:
    return ("rollback.restore", "backup_development_20990101_000000.dump", "--yes")


def _restore_folder(work: Work) -> tuple[str, ...]:
    (work.backups / "backup_development_20990101_000000.dump").mkdir()
    return ("rollback.restore", "backup_development_20990101_000000.dump", "--yes")


def _restore_not_a_backup(work: Work) -> tuple[str, ...]:
    (work.backups / "notes.dump").write_text("not an archive\n")
    return ("rollback.restore", "notes.dump", "--yes")


def _restore_plain_not_a_dump(work: Work) -> tuple[str, ...]:
    (work.backups / "notes.sql").write_text("SELECT 1;\n")
    return ("rollback.restore", "notes.sql", "--yes")


def _restore_outside(work: Work) -> tuple[str, ...]:
    (work.migrations.parent / "elsewhere.dump").write_text("x")
    return ("rollback.restore", str(work.migrations.parent / "elsewhere.dump"), "--yes")


def _migrate_to_unknown(work: Work) -> tuple[str, ...]:
    write_migration(work.migrations, "20250101000000_a", "CREATE TABLE a (id int);\n")
    return ("dev.migrate", "--to", "20990101000000_nothing")


def _generate_into_a_file(work: Work) -> tuple[str, ...]:
    (work.migrations.parent / "notes.txt").write_text("a file\n")
    return ("dev.generate", "--output", str(work.migrations.parent / "notes.txt" / "models.py"))


def _import_missing(work: Work) -> tuple[str, ...]:
    return ("dev.import", str(work.migrations.parent / "prisma" / "migrations"))


def _edited_after_applied(work: Work) -> tuple[str, ...]:
    write_migration(work.migrations, "20250101000000_a", "CREATE TABLE a (id int);\n")
    assert inv_here("dev.migrate", env=work.env()).returncode == 0
    (work.migrations / "20250101000000_a.sql").write_text("CREATE TABLE a (id bigint);\n")
    return ("dev.migrate",)


class OnServer(NamedTuple):
    prepare: Callable[[Work], tuple[str, ...]]
    code: int
    fragments: tuple[str, ...]


ON_A_SERVER: dict[str, OnServer] = {
    # the table
    "latin1-migration-migrate": OnServer(_latin1_migration, 2, (
        "20250101000000_cafe.sql: byte 0xE9 at offset 16 (line 1) is not UTF-8", "save the file as UTF-8")),
    "latin1-migration-status": OnServer(_latin1_status, 2, ("byte 0xE9 at offset 16",)),
    # further cases
    "latin1-rollback": OnServer(_latin1_rollback, 2, ("20250101000000_cafe.rollback.sql: byte 0xE9",)),
    "latin1-schema-sql": OnServer(_latin1_schema, 2, ("schema.sql: byte 0xE9 at offset 16", "UTF-8")),
    "badly-named-migration": OnServer(_badly_named, 2, ("is not named YYYYMMDDHHMMSS_name.sql", "rename it")),
    "rollback-without-migration": OnServer(_orphan_rollback, 2, (
        "has no forward migration 20250101000000_gone.sql", "delete the rollback file")),
    "mark-unknown-id": OnServer(_mark_unknown, 2, ("no migration '20990101000000_nothing' in the folder",)),
    "rollback-to-unknown-id": OnServer(_rollback_to_unknown, 2, (
        "'20990101000000_nothing' is not an applied migration here", "see inv status")),
    "migrate-to-unknown-id": OnServer(_migrate_to_unknown, 2, ("--to 20990101000000_nothing: no such migration",)),
    "restore-missing-file": OnServer(_restore_missing, 1, ("does not exist", "inv rollback.list")),
    "restore-a-folder": OnServer(_restore_folder, 1, ("is a folder, not a backup file", "inv rollback.list")),
    "restore-not-a-backup": OnServer(_restore_not_a_backup, 1, ("is not a readable backup archive",
                                                                "pick another backup")),
    "restore-sql-not-a-dump": OnServer(_restore_plain_not_a_dump, 1, ("no pg_dump header", "pick another backup")),
    "restore-from-outside": OnServer(_restore_outside, 1, ("is outside the backups folder",)),
    "generate-into-a-file": OnServer(_generate_into_a_file, 2, ("is a file, not a folder", "--output")),
    "import-missing-folder": OnServer(_import_missing, 2, ("is not a folder",)),
    "edited-after-applied": OnServer(_edited_after_applied, 1, ("was edited after it was applied", "git checkout")),
}


@pytest.fixture
def work(db_url: DatabaseUrl, tmp_path: Path) -> Work:
    migrations, backups = tmp_path / "migrations", tmp_path / "backups"
    migrations.mkdir()
    backups.mkdir()
    return Work(db_url, migrations, backups)


@pytest.mark.parametrize("name", list(ON_A_SERVER))
def test_bad_input_on_a_database(name: str, work: Work) -> None:
    case = ON_A_SERVER[name]
    args = case.prepare(work)
    before = fingerprint(work)
    done = inv_here(*args, env=work.env())
    assert_one_line(done, case.code, *case.fragments)
    assert fingerprint(work) == before


@pytest.mark.process
def test_a_latin1_migration_in_a_real_process(work: Work) -> None:
    args = _latin1_migration(work)
    assert_one_line(inv_process(*args, env=work.env()), 2, "byte 0xE9 at offset 16", "UTF-8")


def test_a_database_that_does_not_exist(server: DatabaseUrl) -> None:
    url = server.with_dbname("no_such_db_x")
    assert_one_line(inv_here("status", env=cli_env(url)), 1, "database 'no_such_db_x' does not exist")


# -- what is accepted now, and what it does --------------------------------------------------------


def test_a_fractional_connect_timeout_is_accepted(work: Work) -> None:
    done = inv_here("status", "--no-drift", env=work.env(INVOKE_PGSHIFT_CONNECT_TIMEOUT="0.5"))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "up to date" in done.stdout


@pytest.mark.parametrize(("word", "checked"), [("false", False), ("no", False), ("0", False), ("off", False),
                                               ("true", True), ("yes", True), ("1", True), ("on", True)])
def test_preflight_drift_from_the_environment_is_read_as_a_word(word: str, checked: bool, task_db_url: DatabaseUrl,
                                                                tmp_path: Path) -> None:
    work = Work(task_db_url, tmp_path / "migrations", tmp_path / "backups")
    work.migrations.mkdir()
    write_migration(work.migrations, "20250101000000_a", "CREATE TABLE a (id int);\n")
    assert inv_here("dev.migrate", env=work.env()).returncode == 0
    with Database.connect(task_db_url) as db:
        db.execute("CREATE TABLE by_hand (id int)")
    done = inv_here("deploy", "--dry-run", env=work.env(INVOKE_PGSHIFT_PREFLIGHT_DRIFT=word))
    assert "Traceback" not in done.stderr
    assert ("table public.by_hand: added by hand" in done.stdout) is checked, done.stdout


def test_generate_into_a_folder_is_refused_and_a_table_without_a_key_is_mapped(work: Work) -> None:
    with Database.connect(work.url) as db:
        db.execute("CREATE TABLE events (at timestamptz NOT NULL, what text)")  # no primary key
    folder = work.migrations.parent / "models"
    folder.mkdir()
    refused = inv_here("dev.generate", "--output", str(folder), env=work.env())
    assert_one_line(refused, 2, "is a folder; give a file path for the models module", str(folder / "models.py"))
    assert list(folder.iterdir()) == [] and not list(work.migrations.parent.glob(".*.tmp"))
    done = inv_here("dev.generate", "--output", str(folder / "models.py"), env=work.env())
    assert done.returncode == 0, done.stderr
    text = (folder / "models.py").read_text()
    assert "__mapper_args__ = {'primary_key': ['at', 'what']}" in text and "no primary key" in text


# -- half-applied work whose file is gone ------------------------------------------------------------


def test_a_half_applied_migration_whose_file_is_gone_is_not_up_to_date(work: Work) -> None:
    ident = "20250101000000_half"
    write_migration(work.migrations, ident, "CREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY t_i ON t (id);\n"
                                            "SELECT 1/0;\n")
    stopped = inv_here("dev.migrate", env=work.env())
    assert stopped.returncode == 1 and "statements 1-2 of 3 stay applied" in stopped.stderr, stopped.stderr
    (work.migrations / f"{ident}.sql").unlink()
    before = fingerprint(work)
    migrate = inv_here("dev.migrate", env=work.env())
    assert_one_line(migrate, 1, f"{ident} stopped after statement 2 of 3 and migrations/{ident}.sql is gone",
                    "restore the file", f"inv dev.mark {ident} --reverted")
    status = inv_here("status", "--no-drift", env=work.env())
    assert status.returncode == 1 and "needs attention: 1 missing" in status.stdout, status.stdout
    assert f"{ident}  missing" in status.stdout and "restore the file from version control" in status.stdout
    preview = inv_here("deploy", "--dry-run", env=work.env())
    assert preview.returncode == 1 and "a deploy would NOT proceed" in preview.stdout, preview.stdout
    assert fingerprint(work) == before


# -- an archive from another database --------------------------------------------------------------


@pytest.fixture
def foreign_archive(work: Work, server: DatabaseUrl) -> str:
    """A pg_dump archive of another database, with no manifest, in the backups folder."""
    name = throwaway.name("test")
    with Database.connect(server) as admin:
        throwaway.create(admin, name)
    try:
        with Database.connect(server.with_dbname(name)) as other:
            other.execute("CREATE TABLE theirs (id int)")
            version = other.server_version
        path = work.backups / "theirs.dump"
        path.touch(mode=0o600)
        dump.dump(server.with_dbname(name), path, "custom", version)
    finally:
        with Database.connect(server) as admin:
            throwaway.drop(admin, name)
    return name


def test_an_archive_of_another_database_is_refused_without_force(work: Work, foreign_archive: str) -> None:
    before = fingerprint(work)
    refused = inv_here("rollback.restore", "theirs.dump", "--yes", env=work.env())
    assert_one_line(refused, 2, f"theirs.dump has no manifest and was dumped from database {foreign_archive}, "
                                f"not {work.url.dbname}", "inv rollback.restore theirs.dump --force")
    production = inv_here("rollback.restore", "theirs.dump", "--yes", env=work.env(ENVIRONMENT="production"))
    assert_one_line(production, 2, "--force restores it")
    assert fingerprint(work) == before
    forced = inv_here("rollback.restore", "theirs.dump", "--yes", "--force", env=work.env())
    assert forced.returncode == 0, forced.stderr
    assert f"warning: theirs.dump is unverified (no manifest) and was dumped from database {foreign_archive}" \
        in forced.stdout
    with Database.connect(work.url) as db:
        assert db.has_relation("public.theirs")
