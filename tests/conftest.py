"""Real PostgreSQL for every test: the embedded 18 always, the local 15 when it answers.

Under CI=true a missing 15 is a failure, not a skip. Each test that asks for ``db_url`` gets a fresh
database, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pgshift import settings
from pgshift.databases import embedded, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import PgShiftError
from tests.commands import INV, cli_env, full_url
from tests.slack import SlackStub

__all__ = ["INV", "ROOT", "cli_env", "full_url", "write_migration"]

PG15 = DatabaseUrl(host="127.0.0.1", port=5432, dbname="postgres", user="postgres")
ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the fast tier: in-process tests on the embedded server only (no real processes, "
                          "no slow tests, no second server)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        on_15 = params is not None and "pg15" in params.id.split("-")
        needs_15 = "pg15" in getattr(item, "fixturenames", ())
        if item.get_closest_marker("process") or item.get_closest_marker("slow") or on_15 or needs_15:
            drop.append(item)
        else:
            keep.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.fixture(scope="session")
def embedded_folder() -> Iterator[Path]:
    """A private embedded cluster for the test run (never the developer's .pgdata/)."""
    folder = Path(tempfile.mkdtemp(prefix="pgshift-test-", dir="/tmp"))
    folder.chmod(0o755)
    info = embedded.ensure_running(folder)
    # A throwaway cluster for tests: no test crashes the server, so its own durability buys nothing
    # here, and each test's CREATE and DROP DATABASE would wait on disk flushes.
    with Database.connect(info.url("postgres")) as admin:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            admin.execute(f"ALTER SYSTEM SET {setting} = off")  # one at a time: never in a transaction
        admin.execute("SELECT pg_reload_conf()")
    yield folder
    embedded.stop(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg18(embedded_folder: Path) -> DatabaseUrl:
    info = embedded.running(embedded_folder)
    assert info is not None
    return info.url("postgres")


@pytest.fixture(scope="session")
def pg15() -> DatabaseUrl:
    try:
        Database.connect(PG15, connect_timeout=3).close()
    except PgShiftError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL 15 at 127.0.0.1:5432 must answer under CI: {error}")
        pytest.skip(f"PostgreSQL 15 at 127.0.0.1:5432 is not answering: {error}")
    with Database.connect(PG15) as admin:
        throwaway.sweep(admin)  # what killed test runs (or killed commands under test) left
    return PG15


@pytest.fixture(params=["pg18", "pg15"])
def server(request: pytest.FixtureRequest) -> DatabaseUrl:
    """The admin URL (database postgres) of each server in turn."""
    url: DatabaseUrl = request.getfixturevalue(request.param)
    return url


@pytest.fixture
def db_url(server: DatabaseUrl) -> Iterator[DatabaseUrl]:
    """A fresh, empty database on the server, dropped after the test (a throwaway database, so what a
    killed test run left is swept by the next)."""
    name = throwaway.name("test")
    with Database.connect(server) as admin:
        throwaway.create(admin, name)
    yield server.with_dbname(name)
    with Database.connect(server) as admin:
        throwaway.drop(admin, name)


@pytest.fixture
def task_db_url(pg18: DatabaseUrl) -> Iterator[DatabaseUrl]:
    """A fresh database on one server, for tests of the task layer, which does not care which."""
    name = throwaway.name("test")
    with Database.connect(pg18) as admin:
        throwaway.create(admin, name)
    yield pg18.with_dbname(name)
    with Database.connect(pg18) as admin:
        throwaway.drop(admin, name)


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    return folder


@pytest.fixture
def make_settings(tmp_path: Path, migrations_dir: Path) -> object:
    """Build Settings for a URL, with short timeouts so lock tests are quick."""

    def build(url: DatabaseUrl, **overrides: object) -> settings.Settings:
        base = settings.load(tmp_path, {"lock_timeout": 1, "lock_wait": 5, "retry_backoff": 0.2,
                                        "lock_retries": 1, "migrations_dir": str(migrations_dir),
                                        "backups_dir": str(tmp_path / "backups"),
                                        "logs_dir": str(tmp_path / "logs")}, env={})
        return replace(base, url=url, **overrides)  # type: ignore[arg-type]

    return build


@pytest.fixture
def own_machine(monkeypatch: pytest.MonkeyPatch) -> str:
    """A machine tag of this test's own, so the leftovers it plants as "a killed run of this machine" are
    swept by this process alone, never first by a test running in parallel."""
    import secrets

    tag = secrets.token_hex(3)
    monkeypatch.setattr(throwaway, "HOST", tag)
    return tag


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    """A local HTTP server standing in for Slack's webhook."""
    server = SlackStub()
    yield server
    server.close()


def write_migration(folder: Path, ident: str, sql: str, rollback: str | None = None) -> Path:
    path = folder / f"{ident}.sql"
    path.write_text(sql)
    if rollback is not None:
        (folder / f"{ident}.rollback.sql").write_text(rollback)
    return path


