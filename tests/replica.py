"""A real streaming replica for a test: a throwaway primary and its standby, on free local ports.

The machine's PostgreSQL binaries (15 under /usr/lib/postgresql, or ``PGSHIFT_TEST_PGBIN``) make a
primary cluster (``wal_level = replica``, trust auth on 127.0.0.1) in a temporary folder, then a
standby of it with ``pg_basebackup -R`` (it streams from the primary and reports every second);
both are stopped and removed afterwards. PostgreSQL refuses to run as root, so under root the
clusters belong to the ``postgres`` user. Without the binaries the test skips, except under CI=true.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import PgShiftError

BIN = Path(os.environ.get("PGSHIFT_TEST_PGBIN", "/usr/lib/postgresql/15/bin"))
STANDBY_NAME = "pgshift_test_standby"


class Pair(NamedTuple):
    primary: DatabaseUrl   # admin URLs (database postgres)
    standby: DatabaseUrl


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"a streaming replica is needed under CI: {why}")
    pytest.skip(f"no streaming replica here: {why}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], user: str | None, **kwargs: Any) -> None:
    done = subprocess.run(argv, user=user, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False, **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def _wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(PgShiftError):
            found = check()
            if found:
                return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def streaming_pair() -> Iterator[Pair]:
    """A primary and a standby streaming from it, up and connected; stopped and removed after."""
    if not (BIN / "initdb").exists() or not (BIN / "pg_basebackup").exists():
        _unavailable(f"no initdb and pg_basebackup in {BIN}")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no postgres user to own the clusters")
        user = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="pgshift-replica-"))
    folder.chmod(0o755)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    primary, standby = folder / "primary", folder / "standby"
    ports = _free_port(), _free_port()
    started: list[Path] = []
    try:
        _run([str(BIN / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-sync"], user)
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports[0]}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{folder}'\n"
                       "wal_level = replica\nmax_wal_senders = 4\nfsync = off\nsynchronous_commit = off\n"
                       "full_page_writes = off\nshared_buffers = 32MB\n")
        _start(primary, user)
        started.append(primary)
        _run([str(BIN / "pg_basebackup"), "-D", str(standby), "-R", "-X", "stream", "-c", "fast", "--no-sync",
              "-d", f"host=127.0.0.1 port={ports[0]} user=postgres application_name={STANDBY_NAME}"], user)
        with open(standby / "postgresql.auto.conf", "a") as conf:
            conf.write(f"port = {ports[1]}\nhot_standby = on\nwal_receiver_status_interval = 1s\n")
        _start(standby, user)
        started.append(standby)
        pair = Pair(DatabaseUrl(host="127.0.0.1", port=ports[0], dbname="postgres", user="postgres"),
                    DatabaseUrl(host="127.0.0.1", port=ports[1], dbname="postgres", user="postgres"))

        def streaming() -> bool:
            with Database.connect(pair.primary, connect_timeout=3) as db:
                row = db.one("SELECT count(*) FROM pg_stat_replication WHERE application_name = %s "
                             "AND state = 'streaming'", [STANDBY_NAME])
                return row is not None and row[0] == 1

        _wait("the standby to stream", streaming)
        yield pair
    finally:
        for cluster in reversed(started):
            with suppress(AssertionError, subprocess.TimeoutExpired):
                _run([str(BIN / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(folder, ignore_errors=True)


def _start(cluster: Path, user: str | None) -> None:
    _run([str(BIN / "pg_ctl"), "-D", str(cluster), "-l", str(cluster.parent / f"{cluster.name}.log"), "-w", "-t",
          "60", "start"], user)
