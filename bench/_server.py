"""The server a benchmark runs on: the one --url names, or a private embedded PostgreSQL 18."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgshift import embedded
from pgshift.dburl import DatabaseUrl

URL_HELP = "admin URL of a server (database postgres); default: a private embedded PostgreSQL 18"


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
