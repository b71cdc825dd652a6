"""Settings: built once per command from the environment and the Invoke config, then frozen.

Secrets come only from the environment. Non-secret defaults live in the Invoke config (``tasks.py``
``ns.configure`` or an ``invoke.yaml``), under the ``pgshift`` key; see ``DEFAULTS``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConfigError

ENVIRONMENTS = ("development", "staging", "production")
ENV_PREFIX = "INVOKE_PGSHIFT_"  # how Invoke names a config key in the environment

DEFAULTS: dict[str, Any] = {
    "migrations_dir": "migrations",
    "backups_dir": "backups",
    "logs_dir": "logs",
    "embedded_dir": ".pgdata",
    "embedded_database": "imaginarium_development",
    "lock_timeout": 0.5,         # seconds a migration statement may queue for a table lock (queries wait behind it)
    "statement_timeout": 0.0,    # seconds a migration statement may run; 0 means no limit
    "lock_wait": 30.0,           # seconds to wait for another migrator's advisory lock
    "lock_retries": 10,          # retries of a statement or migration that hit lock_timeout
    "retry_backoff": 0.5,        # seconds before the first retry; doubles each time up to 10, jittered
    "concurrent_wait_timeout": 30.0,  # seconds a CREATE INDEX / REINDEX CONCURRENTLY may wait for older
                                 # transactions (each try; then cancelled, its leftover dropped, retried)
    "connect_timeout": 10,       # seconds
    "perf_rows": 100_000,        # inv test.performance: rows in each table nothing references
    "quick_rows": 10_000,        # the performance run inside inv test
    "large_rows": 10_000_000,    # inv test.large-dataset
    "max_migration_seconds": 60.0,  # performance: a migration slower than this fails the check
    "max_lock_seconds": 2.0,     # performance: a lock blocking reads or writes held longer fails it
    "sequence_limit": 0.75,      # constraints: a sequence past this share of its range is reported
    "backup_format": "custom",   # custom (pg_dump -Fc -Z0, .dump) or plain (.sql); see pgshift/dump.py
    "backup_keep_count": 10,     # cleanup keeps the newest N backups of each environment...
    "backup_keep_days": 14.0,    # ...and every backup younger than this many days
    "backup_parallel_bytes": 1_000_000_000,  # from this size (bytes) up, backups are -Fd with parallel jobs
    "rehearsal_sample_rows": 10_000,  # rows per table a rehearsal copies when the target is in use; 0: all
    "maintenance_on_hook": "",   # command run when maintenance turns on: a YAML list, or a string split
    "maintenance_off_hook": "",  # like a shell would (never run by one); "" for none
    "hook_timeout": 30.0,        # seconds a maintenance hook may run
    "slack_timeout": 2.0,        # seconds per Slack post (one retry): a deploy never waits longer
    "preflight_drift": True,     # deploy preflight checks drift (replays the applied migrations: ~1-2 s)
    "allow_out_of_order": False,  # apply a pending migration older than the newest applied (recorded)
    "main_branch": "main",       # inv test: migrations a branch adds must sort after those on this branch
    "forward_only": False,       # the history has no rollbacks by design: backward skips, rollbacks refused
    "accept": [],                # constraints finding ids judged acceptable, e.g. ["fk_index:public.audit.user_id"]
    "backfill_batch_seconds": 0.1,   # a backfill's target batch time: its batch size adapts to it
    "backfill_max_replay_lag": 10.0,  # seconds of replica replay lag that pause a backfill; 0: not checked
    "backfill_max_xact_seconds": 60.0,  # another transaction open this long pauses a backfill; 0: not checked
    "backfill_max_active": 0,    # this many other active sessions pause a backfill; 0: no ceiling
    "backfill_progress_seconds": 5.0,  # a backfill's progress line (log) this often
    "backfill_notify_seconds": 300.0,  # and a Slack message this often (besides start and end); 0: none between
    "phase_lock_timeout": 0.1,   # lock_timeout of a phased migration's expand, contract, abort and batches
    "phase_lock_retries": 20,    # their retries (the pause between grows as for lock_retries)
    "old_release": "",           # deploy.complete: application_name LIKE pattern of the old app's sessions
    "record_schema": "pgshift",  # the schema of the record, its lock and journals: pgshift or pgshift_<name>
}


@dataclass(frozen=True)
class Settings:
    root: Path
    environment: str
    url: DatabaseUrl | None  # None: the embedded development server
    migrations_dir: Path
    backups_dir: Path
    logs_dir: Path
    embedded_dir: Path
    embedded_database: str
    lock_timeout: float
    statement_timeout: float
    lock_wait: float
    lock_retries: int
    retry_backoff: float
    connect_timeout: int
    skip_backup: bool = False
    skip_maintenance: bool = False
    slack_webhook_url: str | None = field(default=None, repr=False)
    perf_rows: int = DEFAULTS["perf_rows"]
    quick_rows: int = DEFAULTS["quick_rows"]
    large_rows: int = DEFAULTS["large_rows"]
    max_migration_seconds: float = DEFAULTS["max_migration_seconds"]
    max_lock_seconds: float = DEFAULTS["max_lock_seconds"]
    sequence_limit: float = DEFAULTS["sequence_limit"]
    backup_format: str = DEFAULTS["backup_format"]
    backup_keep_count: int = DEFAULTS["backup_keep_count"]
    backup_keep_days: float = DEFAULTS["backup_keep_days"]
    backup_parallel_bytes: int = DEFAULTS["backup_parallel_bytes"]
    rehearsal_sample_rows: int = DEFAULTS["rehearsal_sample_rows"]
    maintenance_on_hook: tuple[str, ...] = ()
    maintenance_off_hook: tuple[str, ...] = ()
    hook_timeout: float = DEFAULTS["hook_timeout"]
    slack_timeout: float = DEFAULTS["slack_timeout"]
    preflight_drift: bool = True
    allow_out_of_order: bool = False
    main_branch: str = "main"
    forward_only: bool = False
    accept: tuple[str, ...] = ()
    backfill_batch_seconds: float = DEFAULTS["backfill_batch_seconds"]
    backfill_max_replay_lag: float = DEFAULTS["backfill_max_replay_lag"]
    backfill_max_xact_seconds: float = DEFAULTS["backfill_max_xact_seconds"]
    backfill_max_active: int = DEFAULTS["backfill_max_active"]
    backfill_progress_seconds: float = DEFAULTS["backfill_progress_seconds"]
    backfill_notify_seconds: float = DEFAULTS["backfill_notify_seconds"]
    phase_lock_timeout: float = DEFAULTS["phase_lock_timeout"]
    phase_lock_retries: int = DEFAULTS["phase_lock_retries"]
    old_release: str = ""
    record_schema: str = DEFAULTS["record_schema"]
    concurrent_wait_timeout: float = DEFAULTS["concurrent_wait_timeout"]

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def uses_embedded(self) -> bool:
        return self.url is None

    def describe_target(self) -> str:
        """The target as it may be printed: redacted URL, or the embedded server."""
        if self.url is None:
            return f"embedded PostgreSQL ({self.embedded_dir.name}/), database {self.embedded_database}"
        return str(self.url)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_WORDS = "true/false, 1/0, yes/no or on/off"


def _nearest(word: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for a near miss of a known word, else nothing."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", *_FALSE):
        return False
    if value in _TRUE:
        return True
    raise ConfigError(f"{name}={env[name]!r} is not a yes/no value; use {_WORDS} (or leave it unset for no)")


def _given(config: Mapping[str, Any], key: str) -> Any:
    """The configured value of ``key``; its default when not set (None: Invoke's placeholder for unset)."""
    value = config.get(key)
    return DEFAULTS[key] if value is None else value


def _number(config: Mapping[str, Any], key: str, *, positive: bool = False) -> float:
    """Seconds (a fraction allowed): not negative, or above 0 when ``positive``."""
    value = _given(config, key)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config pgshift.{key}={value!r} is not a number of seconds; "
                          f"give one like {DEFAULTS[key]!r}") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        floor = "above 0" if positive else "0 or more"
        raise ConfigError(f"config pgshift.{key}={value!r} must be a number of seconds {floor}, like {DEFAULTS[key]!r}")
    return number


def _whole(config: Mapping[str, Any], key: str, *, least: int = 0) -> int:
    """A count: a whole number, ``least`` or more (``10_000`` and ``1e6`` as YAML gives them are fine)."""
    value = _given(config, key)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(str(value).strip().replace("_", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"config pgshift.{key}={value!r} is not a whole number; give one like {DEFAULTS[key]!r}")
    if number < least:
        raise ConfigError(f"config pgshift.{key}={value!r} must be {least} or more")
    return int(number)


def _fraction(config: Mapping[str, Any], key: str) -> float:
    value = _given(config, key)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= 1:
        raise ConfigError(f"config pgshift.{key}={value!r} is not a share above 0 and at most 1; "
                          f"give one like {DEFAULTS[key]!r}")
    return number


def _text(config: Mapping[str, Any], key: str) -> str:
    value = _given(config, key)
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
        raise ConfigError(f"config pgshift.{key}={value!r} must be a non-empty name, like {DEFAULTS[key]!r}")
    return str(value).strip()


def _pattern(config: Mapping[str, Any], key: str) -> str:
    """A LIKE pattern, empty allowed (for none)."""
    value = _given(config, key)
    if not isinstance(value, str):
        raise ConfigError(f"config pgshift.{key}={value!r} must be an application_name pattern, like 'shop-v41%'")
    return value.strip()


# pgshift, or pgshift_ and a plain identifier: every schema of that name is left out of a schema's
# snapshot, drift and checks as bookkeeping, whichever tenant's it is.
RECORD_SCHEMA = re.compile(r"pgshift(_[A-Za-z0-9_]{1,55})?")


def record_schema(value: object, where: str = "config pgshift.record_schema") -> str:
    """A schema name for the record: ``pgshift`` or ``pgshift_<name>`` (letters, digits, _; at most 63)."""
    if not isinstance(value, str) or not RECORD_SCHEMA.fullmatch(value):
        raise ConfigError(f"{where}={value!r} must be pgshift or pgshift_ and letters, digits or _ (at most 63 "
                          "in all), like 'pgshift_tenant1'")
    return value


def _database_name(config: Mapping[str, Any], key: str) -> str:
    name = _text(config, key)
    if len(name.encode()) > 63 or "\x00" in name:
        raise ConfigError(f"config pgshift.{key}={name!r} is not a database name: at most 63 bytes")
    return name


def _choice(config: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(_given(config, key)).strip().lower()
    if value not in allowed:
        raise ConfigError(f"config pgshift.{key}={value!r} is not one of: {', '.join(allowed)}"
                          f"{_nearest(value, allowed)}")
    return value


def _yes_no(config: Mapping[str, Any], key: str) -> bool:
    value = _given(config, key)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in ("", *_FALSE):
        return False
    raise ConfigError(f"config pgshift.{key}={value!r} is not a yes/no value; use {_WORDS}")


def _names(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """A list of names (a comma-separated string from the environment)."""
    value = _given(config, key)
    if isinstance(value, str):
        value = [v for v in (part.strip() for part in value.split(",")) if v]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"config pgshift.{key} must be a list of finding ids, e.g. "
                          "[\"fk_index:public.audit.user_id\"] (see the id column of inv test.constraints)")
    return tuple(v.strip() for v in value)


def _command(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """An argument list (never run through a shell); a string is split like a shell would, no more."""
    value = _given(config, key)
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ConfigError(f"config pgshift.{key}={value!r} cannot be split into arguments: {exc}") from None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config pgshift.{key} must be a list of strings, e.g. [\"./bin/drain\", \"--on\"]")
    return tuple(value)


def _for_environment(config: Mapping[str, Any], environment: str) -> Mapping[str, Any]:
    """The config with ``pgshift.<environment>``'s keys over the shared ones (e.g. a longer
    ``lock_timeout`` for production only); the other environments' tables dropped."""
    own = config.get(environment) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"config pgshift.{environment} must be a table of settings, e.g. {{lock_timeout = 1.0}}")
    unknown = set(own) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config key pgshift.{environment}.{sorted(unknown)[0]}; "
                          f"known: {', '.join(DEFAULTS)}")
    return {**{k: v for k, v in config.items() if k not in ENVIRONMENTS}, **own}


def _path(root: Path, config: Mapping[str, Any], key: str) -> Path:
    value = _given(config, key)
    if not isinstance(value, str | Path) or not str(value).strip() or "\x00" in str(value):
        raise ConfigError(f"config pgshift.{key}={value!r} must be a folder path, like {DEFAULTS[key]!r}")
    p = Path(str(value).strip()).expanduser()
    p = p if p.is_absolute() else root / p
    if p.exists() and not p.is_dir():
        raise ConfigError(f"config pgshift.{key}: {p} is a file, not a folder; point it at a folder")
    return p


def _unknown_keys(config: Mapping[str, Any], env: Mapping[str, str]) -> None:
    for key in sorted(config):
        if key not in DEFAULTS and key not in ENVIRONMENTS:
            raise ConfigError(f"unknown config key pgshift.{key}{_nearest(key, [*DEFAULTS, *ENVIRONMENTS])}; "
                              f"known: {', '.join(DEFAULTS)}, and one table per environment "
                              f"({', '.join(ENVIRONMENTS)}) overriding them")
    known = {f"{ENV_PREFIX}{key.upper()}" for key in DEFAULTS}
    known |= {f"{ENV_PREFIX}{where.upper()}_{key.upper()}" for where in ENVIRONMENTS for key in DEFAULTS}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            raise ConfigError(f"{name} is not a setting{_nearest(name, known)}; the settings are "
                              f"{ENV_PREFIX}<KEY> for the keys of DEFAULTS in pgshift/settings.py")


def _environment(env: Mapping[str, str]) -> str:
    environment = env.get("ENVIRONMENT", "").strip() or "development"
    if environment not in ENVIRONMENTS:
        suggestion = environment.lower() if environment.lower() in ENVIRONMENTS else None
        hint = f" (did you mean {suggestion}?)" if suggestion else _nearest(environment.lower(), ENVIRONMENTS)
        raise ConfigError(
            f"ENVIRONMENT={environment!r} is not known{hint}; use development, staging or production")
    return environment


def _webhook(env: Mapping[str, str]) -> str | None:
    value = env.get("SLACK_WEBHOOK_URL", "").strip()
    if value and not value.lower().startswith(("https://", "http://")):
        # Never shown: a webhook URL is a secret.
        raise ConfigError("SLACK_WEBHOOK_URL is not an http:// or https:// URL; set it to the webhook URL "
                          "Slack gave you, or unset it")
    return value or None


def load(root: Path, config: Mapping[str, Any] | None = None,
         env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings for one command: every value checked by type and range. Raises ConfigError with
    the fix on bad input."""
    env = os.environ if env is None else env
    config = config or {}
    _unknown_keys(config, env)
    environment = _environment(env)
    config = _for_environment(config, environment)
    raw_url = env.get("DATABASE_URL", "").strip()
    if "DATABASE_URL" in env and not raw_url and environment != "development":
        raise ConfigError(f"DATABASE_URL is set but empty; ENVIRONMENT={environment} needs the database's URL "
                          "(postgresql://user:password@host:5432/dbname)")
    url = DatabaseUrl.parse(raw_url) if raw_url else None
    if url is None and environment != "development":
        raise ConfigError(
            f"ENVIRONMENT={environment} needs DATABASE_URL; the embedded server is for development only")

    return Settings(
        root=root,
        environment=environment,
        url=url,
        migrations_dir=_path(root, config, "migrations_dir"),
        backups_dir=_path(root, config, "backups_dir"),
        logs_dir=_path(root, config, "logs_dir"),
        embedded_dir=_path(root, config, "embedded_dir"),
        embedded_database=_database_name(config, "embedded_database"),
        lock_timeout=_number(config, "lock_timeout"),
        statement_timeout=_number(config, "statement_timeout"),
        lock_wait=_number(config, "lock_wait"),
        lock_retries=_whole(config, "lock_retries"),
        retry_backoff=_number(config, "retry_backoff"),
        # libpq waits whole seconds: a fraction is rounded up, so 0.5 waits a second, never forever (0)
        connect_timeout=math.ceil(_number(config, "connect_timeout", positive=True)),
        skip_backup=_flag(env, "SKIP_BACKUP"),
        skip_maintenance=_flag(env, "SKIP_MAINTENANCE"),
        slack_webhook_url=_webhook(env),
        perf_rows=_whole(config, "perf_rows", least=1),
        quick_rows=_whole(config, "quick_rows", least=1),
        large_rows=_whole(config, "large_rows", least=1),
        max_migration_seconds=_number(config, "max_migration_seconds", positive=True),
        max_lock_seconds=_number(config, "max_lock_seconds", positive=True),
        sequence_limit=_fraction(config, "sequence_limit"),
        backup_format=_choice(config, "backup_format", ("custom", "plain")),
        backup_keep_count=_whole(config, "backup_keep_count"),
        backup_keep_days=_number(config, "backup_keep_days"),
        backup_parallel_bytes=_whole(config, "backup_parallel_bytes"),
        rehearsal_sample_rows=_whole(config, "rehearsal_sample_rows"),
        maintenance_on_hook=_command(config, "maintenance_on_hook"),
        maintenance_off_hook=_command(config, "maintenance_off_hook"),
        hook_timeout=_number(config, "hook_timeout", positive=True),
        slack_timeout=_number(config, "slack_timeout", positive=True),
        preflight_drift=_yes_no(config, "preflight_drift"),
        allow_out_of_order=_yes_no(config, "allow_out_of_order"),
        main_branch=_text(config, "main_branch"),
        forward_only=_yes_no(config, "forward_only"),
        accept=_names(config, "accept"),
        backfill_batch_seconds=_number(config, "backfill_batch_seconds", positive=True),
        backfill_max_replay_lag=_number(config, "backfill_max_replay_lag"),
        backfill_max_xact_seconds=_number(config, "backfill_max_xact_seconds"),
        backfill_max_active=_whole(config, "backfill_max_active"),
        backfill_progress_seconds=_number(config, "backfill_progress_seconds", positive=True),
        backfill_notify_seconds=_number(config, "backfill_notify_seconds"),
        phase_lock_timeout=_number(config, "phase_lock_timeout", positive=True),
        phase_lock_retries=_whole(config, "phase_lock_retries"),
        old_release=_pattern(config, "old_release"),
        record_schema=record_schema(_given(config, "record_schema")),
        concurrent_wait_timeout=_number(config, "concurrent_wait_timeout", positive=True),
    )
