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


# Every config key: a value it accepts (and what it becomes) and one it refuses (and what it says).
ROOT = Path("/srv/app")
KEYS: dict[str, tuple[object, object, object, str]] = {
    "migrations_dir": ("db/migrations", ROOT / "db/migrations", "", "must be a folder path"),
    "backups_dir": ("/var/backups/app", Path("/var/backups/app"), [], "must be a folder path"),
    "logs_dir": ("logs2", ROOT / "logs2", "  ", "must be a folder path"),
    "embedded_dir": (".pg2", ROOT / ".pg2", 5, "must be a folder path"),
    "embedded_database": ("app_dev", "app_dev", "x" * 64, "at most 63 bytes"),
    "lock_timeout": ("2.5", 2.5, "abc", "lock_timeout='abc' is not a number of seconds; give one like 0.5"),
    "statement_timeout": ("0", 0.0, "-1", "must be a number of seconds 0 or more"),
    "lock_wait": (60, 60.0, "soon", "is not a number of seconds"),
    "lock_retries": ("3", 3, "2.5", "lock_retries='2.5' is not a whole number"),
    "retry_backoff": ("0.5", 0.5, "inf", "must be a number of seconds 0 or more"),
    "connect_timeout": ("0.5", 1, "0", "connect_timeout='0' must be a number of seconds above 0"),
    "perf_rows": ("1e5", 100_000, "0", "perf_rows='0' must be 1 or more"),
    "quick_rows": ("10_000", 10_000, "many", "is not a whole number"),
    "large_rows": (20_000_000, 20_000_000, -5, "must be 1 or more"),
    "max_migration_seconds": ("90", 90.0, "0", "above 0"),
    "max_lock_seconds": (0.5, 0.5, True, "max_lock_seconds=True is not a number of seconds"),
    "sequence_limit": ("0.9", 0.9, "75", "is not a share above 0 and at most 1"),
    "backup_format": ("PLAIN", "plain", "tar", "backup_format='tar' is not one of: custom, plain"),
    "backup_keep_count": ("0", 0, "ten", "backup_keep_count='ten' is not a whole number"),
    "backup_keep_days": ("7.5", 7.5, "-2", "0 or more"),
    "backup_parallel_bytes": ("5e9", 5_000_000_000, "1GB", "backup_parallel_bytes='1GB' is not a whole number"),
    "rehearsal_sample_rows": ("0", 0, "-1", "rehearsal_sample_rows='-1' must be 0 or more"),
    "maintenance_on_hook": ("./bin/drain --on", ("./bin/drain", "--on"), "'unclosed", "cannot be split"),
    "maintenance_off_hook": (["./bin/drain", "--off"], ("./bin/drain", "--off"), [1, 2], "must be a list of strings"),
    "hook_timeout": ("5", 5.0, "0", "hook_timeout='0' must be a number of seconds above 0"),
    "slack_timeout": ("1.5", 1.5, "x", "slack_timeout='x' is not a number of seconds"),
    "preflight_drift": ("off", False, "maybe", "preflight_drift='maybe' is not a yes/no value"),
    "allow_out_of_order": ("yes", True, "2", "allow_out_of_order='2' is not a yes/no value"),
    "main_branch": ("trunk", "trunk", "", "main_branch='' must be a non-empty name"),
    "forward_only": ("true", True, "always", "forward_only='always' is not a yes/no value"),
    "accept": ("fk_index:public.a.b, pk:public.c", ("fk_index:public.a.b", "pk:public.c"), [3],
               "must be a list of finding ids"),
    "backfill_batch_seconds": ("0.2", 0.2, "0", "backfill_batch_seconds='0' must be a number of seconds above 0"),
    "backfill_max_replay_lag": ("0", 0.0, "-1", "backfill_max_replay_lag='-1' must be a number of seconds 0 or more"),
    "backfill_max_xact_seconds": ("30", 30.0, "soon", "backfill_max_xact_seconds='soon' is not a number of seconds"),
    "backfill_max_active": ("8", 8, "1.5", "backfill_max_active='1.5' is not a whole number"),
    "backfill_progress_seconds": ("2", 2.0, "0", "backfill_progress_seconds='0' must be a number of seconds above 0"),
    "backfill_notify_seconds": ("0", 0.0, "-1", "backfill_notify_seconds='-1' must be a number of seconds 0 or more"),
    "phase_lock_timeout": ("0.15", 0.15, "0", "phase_lock_timeout='0' must be a number of seconds above 0"),
    "phase_lock_retries": ("40", 40, "2.5", "phase_lock_retries='2.5' is not a whole number"),
    "old_release": (" shop-v41% ", "shop-v41%", ["v41"], "old_release=['v41'] must be an application_name pattern"),
    "concurrent_wait_timeout": ("2.5", 2.5, "0", "concurrent_wait_timeout='0' must be a number of seconds above 0"),
    "record_schema": ("pgshift_t1", "pgshift_t1", "app; DROP", "record_schema='app; DROP' must be pgshift or pgshift_"),
}


def test_every_config_key_has_a_case() -> None:
    assert set(KEYS) == set(settings.DEFAULTS)


@pytest.mark.parametrize("key", list(KEYS))
def test_each_config_key_is_checked_by_type_and_range(key: str) -> None:
    good, value, bad, fragment = KEYS[key]
    assert getattr(settings.load(ROOT, {key: good}, env={}), key) == value
    with pytest.raises(ConfigError) as caught:
        settings.load(ROOT, {key: bad}, env={})
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("key", list(KEYS))
def test_an_unset_key_takes_its_default(key: str) -> None:
    # None is how the task layer registers every key with Invoke: unset, so the default applies.
    assert getattr(settings.load(ROOT, {key: None}, env={}), key) == getattr(settings.load(ROOT, {}, env={}), key)


@pytest.mark.parametrize(("word", "value"), [
    ("true", True), ("1", True), ("yes", True), ("on", True), ("TRUE", True), (" Yes ", True),
    ("false", False), ("0", False), ("no", False), ("off", False), ("", False), ("No", False),
])
@pytest.mark.parametrize("name", ["SKIP_BACKUP", "SKIP_MAINTENANCE"])
def test_environment_flags_are_yes_no_words(name: str, word: str, value: bool) -> None:
    assert getattr(settings.load(ROOT, {}, env={name: word}), name.lower()) is value


@pytest.mark.parametrize("name", ["SKIP_BACKUP", "SKIP_MAINTENANCE"])
def test_other_flag_words_are_refused_naming_the_accepted_ones(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}='maybe' is not a yes/no value; use true/false, 1/0, yes/no"):
        settings.load(ROOT, {}, env={name: "maybe"})


@pytest.mark.parametrize("word", ["true", "1", "yes", "on", "false", "0", "no", "off"])
def test_config_booleans_accept_the_same_words(word: str) -> None:
    expected = word in ("true", "1", "yes", "on")
    loaded = settings.load(ROOT, {"preflight_drift": word, "allow_out_of_order": word}, env={})
    assert (loaded.preflight_drift, loaded.allow_out_of_order) == (expected, expected)


@pytest.mark.parametrize(("env", "fragment"), [
    ({"ENVIRONMENT": "prodution"}, "ENVIRONMENT='prodution' is not known (did you mean production?)"),
    ({"ENVIRONMENT": "PRODUCTION"}, "(did you mean production?)"),
    ({"ENVIRONMENT": "staging", "DATABASE_URL": ""}, "DATABASE_URL is set but empty"),
    ({"INVOKE_PGSHIFT_LOCK_TIMOUT": "3"}, "INVOKE_PGSHIFT_LOCK_TIMOUT is not a setting (did you mean "
                                          "INVOKE_PGSHIFT_LOCK_TIMEOUT?)"),
    ({"SLACK_WEBHOOK_URL": "hooks.slack.com/services/secret"}, "SLACK_WEBHOOK_URL is not an http:// or https:// URL"),
])
def test_environment_mistakes_name_the_fix(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings.load(ROOT, {}, env=env)
    assert fragment in str(caught.value) and "secret" not in str(caught.value)


def test_an_empty_database_url_in_development_means_the_embedded_server() -> None:
    assert settings.load(ROOT, {}, env={"DATABASE_URL": "  "}).uses_embedded


def test_a_folder_setting_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "backups").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"config pgshift\.backups_dir: .*backups is a file, not a folder"):
        settings.load(tmp_path, {}, env={})


def test_an_environment_table_overrides_and_is_checked_the_same() -> None:
    env = {"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://a@h/db"}
    config = {"lock_timeout": "1", "production": {"lock_timeout": "3"}, "staging": {"lock_timeout": "bad"}}
    assert settings.load(ROOT, config, env=env).lock_timeout == 3.0
    with pytest.raises(ConfigError, match="lock_timeout='soon' is not a number of seconds"):
        settings.load(ROOT, {"production": {"lock_timeout": "soon"}}, env=env)
    with pytest.raises(ConfigError, match=r"config pgshift\.production must be a table of settings"):
        settings.load(ROOT, {"production": 5}, env=env)
    assert settings.load(ROOT, {}, env={**env, "INVOKE_PGSHIFT_PRODUCTION_LOCK_TIMEOUT": "2"}).is_production
