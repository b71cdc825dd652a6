"""Settings and database URLs: parsing, validation, redaction (no database needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgshift import settings
from pgshift.dburl import DatabaseUrl, redact
from pgshift.errors import ConfigError, ExitCode


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_url_schemes_are_accepted(scheme: str) -> None:
    url = DatabaseUrl.parse(f"{scheme}://app:s3cr%40t@db.example.com:6543/imaginarium?sslmode=require")
    assert (url.host, url.port, url.dbname, url.user, url.password) == (
        "db.example.com", 6543, "imaginarium", "app", "s3cr@t")
    assert url.connect_kwargs()["sslmode"] == "require"
    assert url.env()["PGPASSWORD"] == "s3cr@t"


def test_printed_url_never_shows_the_password() -> None:
    url = DatabaseUrl.parse("postgresql://app:hunter2@db:5432/imaginarium")
    assert str(url) == "postgresql://app:***@db:5432/imaginarium"
    assert "hunter2" not in repr(url)
    assert redact("failed for postgresql://app:hunter2@db/x today") == "failed for postgresql://app:***@db/x today"


def test_unix_socket_url_round_trips() -> None:
    url = DatabaseUrl.parse("postgresql:///app?host=/run/postgresql")
    assert url.host == "/run/postgresql" and url.is_local()
    assert DatabaseUrl.parse(str(url)) == url


@pytest.mark.parametrize(("raw", "fragment"), [
    ("mysql://u@h/db", "must start with postgresql://"),
    ("postgresql://u@h:notaport/db", "malformed"),
    ("postgresql://u@h:5432", "names no database"),
])
def test_bad_urls_get_one_clear_line(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        DatabaseUrl.parse(raw)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


def test_defaults_and_environment(tmp_path: Path) -> None:
    loaded = settings.load(tmp_path, {}, env={})
    assert loaded.environment == "development" and loaded.uses_embedded
    assert loaded.migrations_dir == tmp_path / "migrations"
    loaded = settings.load(tmp_path, {"lock_timeout": "2.5"},
                           env={"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://a:pw@h/db",
                                "SKIP_BACKUP": "1", "SLACK_WEBHOOK_URL": "https://hooks.example/x"})
    assert loaded.is_production and loaded.skip_backup and loaded.lock_timeout == 2.5
    assert "pw" not in repr(loaded) and "hooks.example" not in repr(loaded)


@pytest.mark.parametrize(("env", "fragment"), [
    ({"ENVIRONMENT": "qa"}, "ENVIRONMENT='qa' is not known"),
    ({"ENVIRONMENT": "production"}, "needs DATABASE_URL"),
    ({"SKIP_BACKUP": "maybe"}, "not a yes/no value"),
])
def test_bad_environment_is_a_config_error(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        settings.load(tmp_path, {}, env=env)


def test_bad_config_values_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a number"):
        settings.load(tmp_path, {"lock_timeout": "soon"}, env={})
    with pytest.raises(ConfigError, match=r"unknown config key pgshift\.lock_timout"):
        settings.load(tmp_path, {"lock_timout": 3}, env={})
