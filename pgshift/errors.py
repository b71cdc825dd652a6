"""One exception tree for the whole engine.

Every error carries the exit code the command line should end with. Messages are one line that says
what is wrong and what to do next; they never contain a password.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, documented in docs/migrations.md."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PENDING = 3


class PgShiftError(Exception):
    """Base of every error the engine raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILED
    # Set by pgshift.migrations.apply.apply on a failure: the ids it applied (and committed) before failing.
    applied_before: tuple[str, ...] = ()


class ConfigError(PgShiftError):
    """Settings or arguments are wrong: fix the input and run again."""

    exit_code = ExitCode.USAGE


class ConnectionFailed(PgShiftError):
    """The database could not be reached or refused us."""


class CreateRefused(ConnectionFailed):
    """The server will not let our role create a database (no CREATEDB)."""


class MigrationError(PgShiftError):
    """A migration failed to apply or roll back."""


class ChecksumMismatch(MigrationError):
    """An applied migration's file was edited afterwards."""


class LockTimeout(PgShiftError):
    """Another process holds the migration lock, or a table lock we need."""


class ToolError(PgShiftError):
    """An external program (pg_dump, pg_restore, psql, initdb) failed."""


class Refused(PgShiftError):
    """The operation is not allowed here (environment guard, no confirmation)."""

    exit_code = ExitCode.USAGE


class Aborted(PgShiftError):
    """The user said no at a prompt (Ctrl-C at a prompt is an interruption: exit 130)."""

    exit_code = ExitCode.USAGE
