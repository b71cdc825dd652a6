"""Running ``inv`` the two ways the tests need: in this process (the fast tier) or as a real process.

``inv_here`` runs Invoke's own program on the task collection inside the test process, with the given
environment and working folder, and the task layer's output (it writes to the current ``sys.stdout``
and ``sys.stderr``) redirected into strings: the same parsing, config loading, tasks and exit boundary
as the command line, without a Python start-up per call. ``inv_process`` runs the real ``inv`` binary:
for what only a process shows (exit statuses, signals, kill -9, a terminal, atexit, broken pipes).
Both return a ``subprocess.CompletedProcess``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from invoke.main import program

from pgshift import api
from pgshift.dburl import DatabaseUrl

ROOT = Path(__file__).resolve().parent.parent
INV = str(Path(sys.executable).with_name("inv"))  # the inv of this virtual environment
_OURS = ("DATABASE_URL", "ENVIRONMENT", "SKIP_BACKUP", "SKIP_MAINTENANCE", "SLACK_WEBHOOK_URL")


def cli_env(url: DatabaseUrl | None = None, **extra: str) -> dict[str, str]:
    """The environment of a command against ``url``: this one, without our settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _OURS and not k.startswith("INVOKE_PGSHIFT_")}
    if url is not None:
        env["DATABASE_URL"] = full_url(url)
    env.update(extra)
    return env


def full_url(url: DatabaseUrl) -> str:
    """Like str(url) but keeping the password: for handing to a command in its environment only."""
    text = str(url)
    if url.password:
        text = text.replace(":***@", f":{url.password}@", 1)
    return text


def inv_process(*args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INV, *args], cwd=cwd, text=True, capture_output=True, timeout=timeout,
                          env=dict(env) if env is not None else cli_env(), stdin=subprocess.DEVNULL)


def inv_here(*args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    api.cleaned_up()  # what earlier work in this process swept is not this command's to report
    with _environment(env if env is not None else cli_env()), _folder(cwd), _no_terminal(), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            program.run(["inv", *args])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return subprocess.CompletedProcess(["inv", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _no_terminal() -> Iterator[None]:
    """stdin as a pipeline's: nothing to read, not a terminal (so nothing ever prompts)."""
    saved = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        yield
    finally:
        sys.stdin = saved


@contextlib.contextmanager
def _folder(path: Path) -> Iterator[None]:
    saved = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)
