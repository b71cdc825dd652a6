"""A real PgBouncer in front of the local PostgreSQL 15, started on a free port for a test.

The binary is the machine's (``pgbouncer`` on PATH or /usr/sbin), else Debian's package and its c-ares
library, fetched once with ``apt-get download`` and unpacked into a cache folder (no install, no root
needed for that). Where neither can be had the tests skip, except under CI=true, where they fail.
PgBouncer refuses to run as root, so under root it runs as the user owning the server (``postgres``, or
the embedded server's own user for its private socket folder).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pgshift.dburl import DatabaseUrl

CACHE = Path(tempfile.gettempdir()) / "pgshift-test-pgbouncer"
PACKAGES = ("pgbouncer", "libc-ares2")


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PgBouncer is needed under CI: {why}")
    pytest.skip(f"no PgBouncer here: {why}")


def binary() -> tuple[Path, dict[str, str]]:
    """The pgbouncer program and the environment it runs with."""
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if found:
        return Path(found), {}
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / "root"
    program = root / "usr/sbin/pgbouncer"
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers fetch it once
        if not program.exists():
            if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
                _unavailable("neither pgbouncer nor apt-get to fetch it")
            fetched = subprocess.run(["apt-get", "download", *PACKAGES], cwd=CACHE, capture_output=True,
                                     text=True, timeout=300)
            if fetched.returncode != 0:
                _unavailable(f"apt-get download failed: {fetched.stderr.strip()[-200:]}")
            for deb in CACHE.glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    libs = [str(p) for p in (root / "usr/lib").glob("*-linux-gnu")]
    return program, {"LD_LIBRARY_PATH": os.pathsep.join(libs)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pgbouncer(server: DatabaseUrl, pool_mode: str, *, stats_user: bool = True) -> Iterator[DatabaseUrl]:
    """PgBouncer in ``pool_mode`` in front of ``server`` (trust auth); yields the server URL rewritten
    to go through it."""
    program, extra = binary()
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="pgshift-pgbouncer-"))
    user = server.user or "postgres"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={server.host} port={server.port}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = {pool_mode}\n"
        f"max_client_conn = 200\ndefault_pool_size = 20\n"
        + (f"stats_users = {user}\n" if stats_user else "")
        + f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n")
    as_user: list[str] = []
    if os.geteuid() == 0:  # as the user that owns the server's socket folder, which may be private
        owner = "postgres"
        if server.host and server.host.startswith("/"):
            import pwd

            owner = pwd.getpwuid(Path(server.host).stat().st_uid).pw_name
        shutil.chown(folder, owner)
        for item in folder.iterdir():
            shutil.chown(item, owner)
        as_user = ["runuser", "-u", owner, "--"]
    env = {**os.environ, **extra}
    process = subprocess.Popen([*as_user, "env", *(f"{k}={v}" for k, v in extra.items()), str(program),
                                str(folder / "pgbouncer.ini")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                    _unavailable(f"it did not start: {(process.stderr.read() if process.stderr else '')} {log}"[-300:])
                time.sleep(0.05)
        yield DatabaseUrl(host="127.0.0.1", port=port, dbname=server.dbname, user=user, params=server.params)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)
