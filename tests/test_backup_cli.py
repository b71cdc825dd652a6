"""The backup and rollback tasks as people and pipelines run them: exit codes, one-line errors, the
no-terminal refusal, the prompt policy, and no password in the process list, output or files."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import Refused
from tasks import _prompts
from tests.backups import HEAD, fingerprint, fresh_database, populate, table_locked
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.helpers import wait_for


def inv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return inv_here(*args, env=env)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def db15(pg15: DatabaseUrl) -> Iterator[DatabaseUrl]:
    with fresh_database(pg15) as url:
        yield url


@pytest.fixture
def db18(pg18: DatabaseUrl) -> Iterator[DatabaseUrl]:
    with fresh_database(pg18) as url:
        yield url


def test_backup_list_and_restore_from_the_command_line(db15: DatabaseUrl, tmp_path: Path, migrations_dir: Path,
                                                       make_settings: Any) -> None:
    db_url = db15
    populate(db_url, migrations_dir, make_settings(db_url))
    folder = tmp_path / "cli-backups"
    env = cli_env(db_url, INVOKE_PGSHIFT_BACKUPS_DIR=str(folder))
    taken = inv("backup", env=env)
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.startswith(f"backed up {db_url.dbname} to {folder}/backup_development_")
    assert f"migration head {HEAD}" in taken.stdout and taken.stderr == ""  # no progress line without a TTY
    listed = json.loads(inv("rollback.list", "--json", env=env).stdout)
    assert [(b["environment"], b["verified"], b["migration_head"]) for b in listed] == [("development", True, HEAD)]
    table = inv("rollback.list", env=env).stdout
    assert "migration head" in table and Path(listed[0]["file"]).name in table
    before = fingerprint(db_url)
    with Database.connect(db_url) as db:
        db.execute("DELETE FROM shop.orders")

    production = cli_env(db_url, INVOKE_PGSHIFT_BACKUPS_DIR=str(folder), ENVIRONMENT="production")
    one_line_error(inv("rollback.restore", Path(listed[0]["file"]).name, env=production), 2,
                   "was taken from development")
    one_line_error(inv("rollback.restore", "backup_development_20990101_000000.dump", env=env), 1,
                   "does not exist; inv rollback.list shows the backups there are")
    one_line_error(inv("prod.backup", env=env), 2, "prod tasks need ENVIRONMENT=production")

    restored = inv("rollback.restore", Path(listed[0]["file"]).name, env=env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines()[-1] == f"migration head now in place: {HEAD}"
    assert fingerprint(db_url) == before


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_production_restore_without_a_terminal_refuses_and_names_yes(db18: DatabaseUrl, tmp_path: Path,
                                                                      migrations_dir: Path,
                                                                      make_settings: Any) -> None:
    db_url = db18
    populate(db_url, migrations_dir, make_settings(db_url))
    folder = tmp_path / "prod-backups"
    env = cli_env(db_url, INVOKE_PGSHIFT_BACKUPS_DIR=str(folder), ENVIRONMENT="production")
    assert inv("prod.backup", env=env).returncode == 0
    with Database.connect(db_url) as db:
        db.execute("DELETE FROM shop.orders")
    before = fingerprint(db_url, schema=False)
    name = next(folder.glob("backup_production_*.dump")).name

    one_line_error(inv("rollback.restore", name, env=env), 2, "pass --yes")
    one_line_error(inv("rollback.interactive", env=env), 2, "pass --yes")
    assert fingerprint(db_url, schema=False) == before

    done = inv("rollback.interactive", "--yes", env=env)  # --yes picks the newest verified backup
    assert done.returncode == 0, done.stderr
    assert f"restored {name} into {db_url.dbname}" in done.stdout
    assert fingerprint(db_url, schema=False) != before

    dry = inv("prod.cleanup", "--dry-run", env=env)
    assert dry.returncode == 0 and "would remove 0 backup(s)" in dry.stdout
    assert json.loads(inv("prod.cleanup", "--json", env=env).stdout)["remove"] == []


@pytest.mark.process
def test_no_password_in_ps_output_or_files(pg15: DatabaseUrl, tmp_path: Path, migrations_dir: Path,
                                          make_settings: Any) -> None:
    role, password = f"pgshift_t_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    name = f"pgshift_t_{uuid.uuid4().hex[:12]}"
    with Database.connect(pg15) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD {admin.literal(password)}; "
                      f"GRANT pg_read_all_data TO {role}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        url = pg15.with_dbname(name)
        populate(url, migrations_dir, make_settings(url))
        as_role = DatabaseUrl(host="127.0.0.1", port=5432, dbname=name, user=role, password=password)
        folder = tmp_path / "secret-backups"
        env = cli_env(as_role, INVOKE_PGSHIFT_BACKUPS_DIR=str(folder), INVOKE_PGSHIFT_LOCK_WAIT="60")
        assert password in env["DATABASE_URL"]
        with table_locked(url, "shop.orders"):  # pg_dump waits here, so we can look at it in ps
            child = subprocess.Popen([INV, "backup"], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            listing: list[str] = []

            def dumping() -> bool:
                if child.poll() is not None:
                    pytest.fail(f"inv backup ended early: {child.communicate()}")
                listing[:] = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True,
                                            check=True).stdout.splitlines()
                return any("pg_dump" in line and "--format=custom" in line for line in listing)

            wait_for(dumping, "pg_dump to show in ps")
            assert not [line for line in listing if password in line]
            time.sleep(0.2)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert password not in out + err
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.suffix == ".json" for p in files)
        assert not [p for p in files if password.encode() in p.read_bytes()]
    finally:
        with Database.connect(pg15) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_prompt_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _prompts.confirm_typed("app", yes=True) is True
    assert _prompts.select("pick", [("a", 1), ("b", 2)], default=2, yes=True) == 2
    assert _prompts.select("pick", [], default=None) is None
    monkeypatch.setattr(_prompts, "tty", lambda: False)
    for ask in (lambda: _prompts.confirm("go?"), lambda: _prompts.confirm_typed("app"),
                lambda: _prompts.select("pick", [("a", 1)], default=1)):
        with pytest.raises(Refused, match="no terminal to ask at; pass --yes"):
            ask()


@pytest.mark.parametrize(("typed", "expected"), [("app", True), (" app ", True), ("ap", False), (None, False)])
def test_typed_confirmation_needs_the_exact_name(typed: str | None, expected: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import questionary

    class Answer:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def unsafe_ask(self) -> str | None:
            return typed  # an empty or odd answer is a no

    monkeypatch.setattr(_prompts, "tty", lambda: True)
    monkeypatch.setattr(questionary, "text", Answer)
    assert _prompts.confirm_typed("app") is expected


class Terminal:
    """``inv`` run at a pseudo-terminal, so questionary really prompts; keys are sent as bytes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, replica = pty.openpty()
        # No cursor-position requests: nobody answers them here, and prompt_toolkit would wait for one.
        terminal_env = {**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.proc = subprocess.Popen([INV, *args], cwd=ROOT, env=terminal_env, stdin=replica, stdout=replica,
                                     stderr=replica, start_new_session=True)
        os.close(replica)
        self.seen = b""

    def expect(self, text: str, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while text.encode() not in self.seen:
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} at the terminal; it shows: {self.seen[-500:]!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.master, 65536)

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self) -> int:
        code = self.proc.wait(60)
        with contextlib.suppress(OSError):
            while select.select([self.master], [], [], 0.2)[0]:
                chunk = os.read(self.master, 65536)
                if not chunk:
                    break
                self.seen += chunk
        os.close(self.master)
        return code


@pytest.mark.process
def test_interactive_restore_at_a_terminal(db18: DatabaseUrl, tmp_path: Path, migrations_dir: Path,
                                           make_settings: Any) -> None:
    populate(db18, migrations_dir, make_settings(db18))
    env = cli_env(db18, INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "b"), ENVIRONMENT="production")
    assert inv("prod.backup", env=env).returncode == 0
    with Database.connect(db18) as db:
        db.execute("DELETE FROM shop.orders")
    before = fingerprint(db18, schema=False)

    ctrl_c = Terminal(["rollback.interactive"], env)
    ctrl_c.expect("backup to restore")
    ctrl_c.send("\x03")
    assert ctrl_c.finish() == 130  # Ctrl-C, as the docs say
    assert ctrl_c.seen.count(b"aborted") == 1 and b"Traceback" not in ctrl_c.seen

    wrong = Terminal(["rollback.interactive"], env)
    wrong.expect("backup to restore")
    wrong.send("\r")
    wrong.expect(f"type the database name ({db18.dbname})")
    wrong.send("production\r")
    assert wrong.finish() == 2 and b"restore cancelled; nothing was changed" in wrong.seen  # a no
    assert fingerprint(db18, schema=False) == before

    right = Terminal(["rollback.interactive"], env)
    right.expect("backup to restore")
    right.send("\r")
    right.expect(f"type the database name ({db18.dbname})")
    right.send(db18.dbname + "\r")
    assert right.finish() == 0, right.seen[-500:]
    assert f"migration head now in place: {HEAD}".encode() in right.seen
    assert fingerprint(db18, schema=False) != before


def test_progress_line_at_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pgshift.databases.dump import DumpProgress as Progress
    from tasks import _backup

    meter = _backup.Meter()
    meter.enabled = True  # as at a terminal
    monkeypatch.setattr(_backup.time, "monotonic", iter([10.0, 10.1, 11.0]).__next__)
    meter(Progress("dump", 50_000_000, 200_000_000, "bytes", 2.0))
    meter(Progress("dump", 60_000_000, 200_000_000, "bytes", 2.1))  # within half a second: not shown
    meter(Progress("restore", 40, 120, "objects", 4.0))
    meter.close()
    err = capsys.readouterr().err
    assert "\rdump: 50.0 MB of ~200.0 MB, 2 s, 25.0 MB/s" in err
    assert "60.0 MB" not in err
    assert "\rrestore: 40 of 120 objects, 4 s, 10 objects/s" in err
    assert err.endswith("\r\033[K")
