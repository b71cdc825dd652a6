"""A throwaway PostgreSQL 15 cluster that loads pg_stat_statements, for the tests of the contract gate.

Neither shared test server loads it (``shared_preload_libraries`` is empty on both, and it can only be
set at server start), so a test that needs it starts its own cluster in a temporary folder on a free
port, and stops and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> str | None:
    """Why the cluster cannot be started here, or None when it can."""
    if not (BIN / "initdb").exists() or not (BIN.parent / "lib" / "pg_stat_statements.so").exists():
        return f"no PostgreSQL 15 with pg_stat_statements under {BIN.parent}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _user() -> str | None:
    """The server may not run as root: as the postgres user then."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres").pw_name


@contextlib.contextmanager
def cluster() -> Iterator[DatabaseUrl]:
    """The admin URL of a new cluster started with ``shared_preload_libraries = pg_stat_statements``."""
    folder = Path(tempfile.mkdtemp(prefix="pgshift-statements-", dir="/tmp"))
    user = _user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = _free_port()
    options = (f"-c shared_preload_libraries=pg_stat_statements -c listen_addresses=127.0.0.1 -p {port} "
               f"-k {folder} -c fsync=off")
    started = False
    try:
        subprocess.run([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], user=user, check=True, capture_output=True, cwd=folder)
        subprocess.run([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options,
                        "start"], user=user, check=True, capture_output=True, cwd=folder)
        started = True
        url = DatabaseUrl(host="127.0.0.1", port=port, dbname="postgres", user="postgres")
        with Database.connect(url) as db:
            assert db.one("SHOW shared_preload_libraries") == ("pg_stat_statements",)
        yield url
    finally:
        if started:
            subprocess.run([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user=user,
                           check=False, capture_output=True, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)
