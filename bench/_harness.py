"""What the benchmarks share: the server they run on, the environment of a timed command, the timing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgshift.databases import embedded
from pgshift.dburl import DatabaseUrl

ROOT = Path(__file__).resolve().parent.parent
URL_HELP = "admin URL of a server (database postgres); default: a private embedded PostgreSQL 18"
# Settings a benchmark sets itself; bytecode caching stays on, as on a user's machine (some CI images
# set PYTHONDONTWRITEBYTECODE, which would make every run compile the tool and measure that instead).
_DROP = ("ENVIRONMENT", "DATABASE_URL", "PYTHONDONTWRITEBYTECODE", "SLACK_WEBHOOK_URL", "SKIP_BACKUP",
         "SKIP_MAINTENANCE")


@contextmanager
def admin_url(url: str | None) -> Iterator[DatabaseUrl]:
    """The admin URL of ``url``, or of an embedded server started here and stopped (and removed) after."""
    if url:
        yield DatabaseUrl.parse(url)
        return
    folder = Path(tempfile.mkdtemp(prefix="pgshift-bench-", dir="/tmp"))
    folder.chmod(0o755)  # the server runs as its own user when we are root
    try:
        yield embedded.ensure_running(folder).url("postgres")
    finally:
        embedded.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def env_for(url: DatabaseUrl, migrations: Path, environment: str = "development", **extra: str) -> dict[str, str]:
    """The environment of one timed ``inv`` run against ``url`` with the given migrations folder."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(DATABASE_URL=str(url), ENVIRONMENT=environment, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations))
    env.update(url.env())
    env.update(extra)
    return env


def timed(argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> float:
    """Seconds one whole process took; a failure ends the benchmark with its stderr."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed
