"""Settings: built once per command from the environment and the Invoke config, then frozen.

Secrets come only from the environment. Non-secret defaults live in the Invoke config (``tasks.py``
``ns.configure`` or an ``invoke.yaml``), under the ``pgshift`` key; see ``DEFAULTS``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConfigError

ENVIRONMENTS = ("development", "staging", "production")

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


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={env[name]!r} is not a yes/no value; use 1 or 0")


def _number(config: Mapping[str, Any], key: str) -> float:
    value = config.get(key, DEFAULTS[key])
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config pgshift.{key}={value!r} is not a number of seconds") from None
    if number < 0:
        raise ConfigError(f"config pgshift.{key}={value!r} must not be negative")
    return number


def _choice(config: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(config.get(key, DEFAULTS[key])).strip().lower()
    if value not in allowed:
        raise ConfigError(f"config pgshift.{key}={value!r} is not one of: {', '.join(allowed)}")
    return value


def _yes_no(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"config pgshift.{key}={value!r} is not a yes/no value; use true or false")


def _command(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """An argument list (never run through a shell); a string is split like a shell would, no more."""
    value = config.get(key, DEFAULTS[key])
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


def load(root: Path, config: Mapping[str, Any] | None = None,
         env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings for one command. Raises ConfigError with the fix on bad input."""
    env = os.environ if env is None else env
    config = config or {}
    unknown = set(config) - set(DEFAULTS) - set(ENVIRONMENTS)
    if unknown:
        raise ConfigError(f"unknown config key pgshift.{sorted(unknown)[0]}; known: {', '.join(DEFAULTS)}, "
                          f"and one table per environment ({', '.join(ENVIRONMENTS)}) overriding them")
    environment = env.get("ENVIRONMENT", "").strip() or "development"
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"ENVIRONMENT={environment!r} is not known; use development, staging or production")
    config = _for_environment(config, environment)
    raw_url = env.get("DATABASE_URL", "").strip()
    url = DatabaseUrl.parse(raw_url) if raw_url else None
    if url is None and environment != "development":
        raise ConfigError(
            f"ENVIRONMENT={environment} needs DATABASE_URL; the embedded server is for development only")

    def path(key: str) -> Path:
        p = Path(str(config.get(key, DEFAULTS[key])))
        return p if p.is_absolute() else root / p

    return Settings(
        root=root,
        environment=environment,
        url=url,
        migrations_dir=path("migrations_dir"),
        backups_dir=path("backups_dir"),
        logs_dir=path("logs_dir"),
        embedded_dir=path("embedded_dir"),
        embedded_database=str(config.get("embedded_database", DEFAULTS["embedded_database"])),
        lock_timeout=_number(config, "lock_timeout"),
        statement_timeout=_number(config, "statement_timeout"),
        lock_wait=_number(config, "lock_wait"),
        lock_retries=int(_number(config, "lock_retries")),
        retry_backoff=_number(config, "retry_backoff"),
        connect_timeout=int(_number(config, "connect_timeout")),
        skip_backup=_flag(env, "SKIP_BACKUP"),
        skip_maintenance=_flag(env, "SKIP_MAINTENANCE"),
        slack_webhook_url=env.get("SLACK_WEBHOOK_URL", "").strip() or None,
        perf_rows=int(_number(config, "perf_rows")),
        quick_rows=int(_number(config, "quick_rows")),
        large_rows=int(_number(config, "large_rows")),
        max_migration_seconds=_number(config, "max_migration_seconds"),
        max_lock_seconds=_number(config, "max_lock_seconds"),
        sequence_limit=_number(config, "sequence_limit"),
        backup_format=_choice(config, "backup_format", ("custom", "plain")),
        backup_keep_count=int(_number(config, "backup_keep_count")),
        backup_keep_days=_number(config, "backup_keep_days"),
        backup_parallel_bytes=int(_number(config, "backup_parallel_bytes")),
        rehearsal_sample_rows=int(_number(config, "rehearsal_sample_rows")),
        maintenance_on_hook=_command(config, "maintenance_on_hook"),
        maintenance_off_hook=_command(config, "maintenance_off_hook"),
        hook_timeout=_number(config, "hook_timeout"),
        slack_timeout=_number(config, "slack_timeout"),
        preflight_drift=_yes_no(config, "preflight_drift"),
        allow_out_of_order=_yes_no(config, "allow_out_of_order"),
        main_branch=str(config.get("main_branch", DEFAULTS["main_branch"])),
    )
