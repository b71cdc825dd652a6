"""Directory-format backups: the per-file checksums inside the folder, and checking them.

A ``.dir`` backup is the folder pg_dump ``-Fd`` writes (``toc.dat`` and one ``<id>.dat`` per table)
plus ``SHA256SUMS``, the SHA-256 of every other file in ``sha256sum`` format (``cd`` into it and
``sha256sum -c SHA256SUMS`` checks it by hand). The manifest beside the folder records the checksum of
``SHA256SUMS`` itself, so the chain reaches every byte. Like a one-file backup it is written under a
hidden ``.<name>.<pid>.<random>.partial`` name and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from pgshift.databases.dump import jobs

SUMS = "SHA256SUMS"
_READ = 4 << 20


class Mismatch(Exception):
    """A file of a directory backup is missing, extra, or not as checksummed."""


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ):
            sha.update(chunk)
    return sha.hexdigest()


def fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digests(folder: Path, names: list[str], sync: bool) -> dict[str, str]:
    """SHA-256 of each file (fsynced too, with ``sync``), several files at once: hashing is CPU, the
    reads and the fsyncs are disk, and they overlap."""
    sums: dict[str, str] = {}
    failure: list[OSError] = []
    lock = threading.Lock()
    todo = sorted(names, key=lambda n: (folder / n).stat().st_size)  # biggest first: popped from the end

    def work() -> None:
        while True:
            with lock:
                if not todo or failure:
                    return
                name = todo.pop()
            try:
                digest = _sha256(folder / name)
                if sync:
                    fsync(folder / name)
            except OSError as exc:
                with lock:
                    failure.append(exc)
                return
            with lock:
                sums[name] = digest

    workers = [threading.Thread(target=work, daemon=True) for _ in range(jobs())]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failure:
        raise failure[0]
    return sums


def seal(folder: Path) -> str:
    """Checksum and fsync every file pg_dump wrote in ``folder``, write ``SHA256SUMS`` (fsynced, as is the
    folder); returns the checksum of ``SHA256SUMS``."""
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_file() and entry.name != SUMS)
    sums = _digests(folder, names, sync=True)
    text = "".join(f"{sums[name]}  {name}\n" for name in names)
    path = folder / SUMS
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    fsync(folder)
    return hashlib.sha256(text.encode()).hexdigest()


def check(folder: Path) -> str:
    """Re-read every file of the directory backup ``folder`` against ``SHA256SUMS``; returns the
    checksum of ``SHA256SUMS`` (for the manifest's) or raises Mismatch naming the first problem."""
    path = folder / SUMS
    try:
        text = path.read_text()
    except OSError:
        raise Mismatch(f"{SUMS} is missing from it") from None
    listed: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if not digest or not name or "/" in name:
            raise Mismatch(f"{SUMS} has a malformed line {line[:80]!r}")
        listed[name] = digest
    present = {entry.name for entry in folder.iterdir() if entry.name != SUMS}
    extra = sorted(present - set(listed))
    if extra:
        raise Mismatch(f"{extra[0]} is in it but not in {SUMS}")
    missing = sorted(set(listed) - present)
    if missing:
        raise Mismatch(f"{missing[0]} is missing from it")
    found = _digests(folder, list(listed), sync=False)
    changed = sorted(name for name, digest in listed.items() if found[name] != digest)
    if changed:
        raise Mismatch(f"{changed[0]} does not match its checksum in {SUMS}: the file changed after it was written")
    return hashlib.sha256(text.encode()).hexdigest()


def remove(path: Path) -> None:
    """Remove a backup or a leftover, file or directory; gone already is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
