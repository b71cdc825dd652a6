"""What every task shares: settings, the one error-to-exit boundary, and output formatting.

Imports here stay light (no psycopg, sqlalchemy, questionary or requests), so ``inv --list`` is fast;
tasks import the engine's heavy modules inside their bodies.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit

from pgshift import settings as settings_module
from pgshift.errors import ConfigError, ExitCode, PgShiftError
from pgshift.interrupt import terminate_as_interrupt
from pgshift.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# What is alive when a command ends (modules, the driver, the rows read) lives until the process exits.
# Frozen, it is skipped by the garbage collection the interpreter runs on the way out, which otherwise
# walks all of it: about 30 ms off every command. (atexit handlers run before that collection.)
atexit.register(gc.freeze)
# Every key is registered (so Invoke maps INVOKE_PGSHIFT_<KEY> to it) with None as its value: Invoke casts an
# environment string to the type of the value it replaces, and would fail on "abc" for a number with a
# traceback, or read "false" as true for a boolean. With None it hands the string over as it is, and
# pgshift.settings checks and converts every value, giving an unset one its default.
CONFIG_DEFAULTS: dict[str, Any] = {"pgshift": dict.fromkeys(settings_module.DEFAULTS)}

F = TypeVar("F", bound=Callable[..., Any])


def settings(c: Context, require: str | None = None) -> Settings:
    """Settings for this run; ``require`` names the environment a namespace is for."""
    config = dict(c.config.get("pgshift", {}))
    loaded = settings_module.load(ROOT, config, os.environ)
    if require == "production" and not loaded.is_production:
        raise ConfigError(
            f"prod tasks need ENVIRONMENT=production (it is {loaded.environment}); "
            "set it, or use the dev tasks for development")
    if require == "development" and loaded.environment != "development":
        instead = "inv prod.deploy for production" if loaded.is_production else \
            f"inv deploy (or inv status, inv backup) for {loaded.environment}"
        raise ConfigError(
            f"dev tasks work on development only (ENVIRONMENT={loaded.environment}); use {instead}")
    return loaded


def boundary(func: F) -> F:
    """The one place where engine errors become a message on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with terminate_as_interrupt():
                result = func(*args, **kwargs)
            sys.stdout.flush()  # here, not at exit: a reader that went away (| head) is seen below
            return result
        except PgShiftError as error:
            from pgshift import api

            raise Exit(f"error: {api.redact(str(error))}", code=int(error.exit_code)) from None
        except KeyboardInterrupt:
            raise Exit("aborted", code=INTERRUPTED) from None
        except BrokenPipeError:
            _stdout_gone()
            raise Exit(code=BROKEN_PIPE) from None
        finally:
            _say_cleaned_up()

    return wrapper  # type: ignore[return-value]


INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a Unix tool ends with when its reader stops reading


def _stdout_gone() -> None:
    """The reader of stdout went away (``inv status | head -1``): end quietly, as Unix tools do. What is
    still buffered goes nowhere, so the interpreter's flush on the way out does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (the in-process tests' buffer)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _say_cleaned_up() -> None:
    """On stderr (stdout may be a table or one JSON object): what killed runs left that we dropped."""
    from pgshift import api

    found = api.cleaned_up()
    if found:
        sys.stderr.write(f"note: dropped {len(found)} database(s) that killed runs had left: {', '.join(found)}\n")
    for note in api.lock_notes():
        sys.stderr.write(f"note: {note}\n")


def finish(code: ExitCode) -> None:
    """End the task with ``code`` (no message: the output already said why)."""
    if code != ExitCode.OK:
        raise Exit(code=int(code))


def out(text: str = "") -> None:
    """Write a line of a task's output to the current ``sys.stdout`` (looked up at each call, so a
    caller that redirects it, like the in-process test tier, reads the text)."""
    sys.stdout.write(text + "\n")


class LiveOut:
    """``out`` on a terminal, which also rewrites one line in place ("" clears it): how the progress of a
    long statement, such as a concurrent index build, shows without scrolling."""

    def __call__(self, text: str = "") -> None:
        out(text)

    def live(self, text: str) -> None:
        width = shutil.get_terminal_size().columns - 1
        sys.stdout.write(f"\r{text[:width]}\033[K")
        sys.stdout.flush()


def progress_out() -> Callable[[str], None]:
    """Where a task's progress goes: ``out``, with the live line when stdout is a terminal."""
    return LiveOut() if sys.stdout.isatty() else out


def emit_json(data: Any) -> None:
    out(json.dumps(data, indent=2, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), rule, *body])


def tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
