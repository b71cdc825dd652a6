"""The fleet file (``fleet.toml`` beside ``tasks.py``): which databases a fleet deploy works on.

    [fleet]
    wave_size = 25       # targets per wave after the canaries
    max_failures = 0     # the run halts once more targets than this have failed ("5%": a share of them)
    parallel = 4         # targets deployed at once (--parallel overrides it)

    [[targets]]
    name = "tenant-a"
    url = "postgresql://app:${TENANT_A_PASSWORD}@db1:5432/tenant_a"
    schema = "app"       # optional: the search_path of the run, and the tenant's own record (see below)
    labels = ["eu"]      # optional
    wave = 0             # optional: 0 for a canary; without it the target goes in a wave of wave_size

A target with a ``schema`` is a tenant: its migration record, lock, deploy history and maintenance flag
live in the schema ``pgshift_<schema>`` (``record_schema`` names another), so tenants that share one
database each have their own record, may be at different versions and deploy at the same time. A
target without one keeps them in ``pgshift``, as a single-database deploy does.

The file is committed, so a URL may not hold a literal password: ``${NAME}`` takes it (or any other
part of the URL) from the environment.

For a fleet that changes daily, a ``[source]`` takes the targets from a control database instead:

    [source]
    url = "${CONTROL_DATABASE_URL}"
    query = "SELECT name, url, schema, labels, wave FROM tenants WHERE active"

The query returns the columns of a ``[[targets]]`` entry in that order (``name`` and ``url`` at least;
``labels`` a text array). Its URLs live in the database, not in the committed file, so they may hold
passwords; ``${NAME}`` is expanded in them too.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pgshift import settings as settings_module
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConfigError, PgShiftError
from pgshift.settings import Settings

DEFAULT_FILE = "fleet.toml"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&]*)", re.IGNORECASE)
_OPTIONS = {"wave_size": 25, "max_failures": 0, "parallel": 4}


@dataclass(frozen=True)
class Target:
    name: str
    url: DatabaseUrl       # expanded; prints redacted
    schema: str | None = None
    labels: tuple[str, ...] = ()
    wave: int | None = None  # as the file gives it; None: a wave of wave_size
    record_schema: str = "pgshift"  # where its record lives: pgshift_<schema> for a tenant

    @property
    def canary(self) -> bool:
        return self.wave == 0

    def settings(self, base: Settings) -> Settings:
        """The single-database settings of this target: its URL, its own backups and logs folders (the
        retention policy of one folder must never weigh one target's backups against another's)."""
        url = self.url
        if self.schema is not None:
            url = replace(url, params=(*url.params, ("options", f"-c search_path={self.schema}")))
        return replace(base, url=url, backups_dir=base.backups_dir / "fleet" / self.name,
                       logs_dir=base.logs_dir / "fleet" / self.name, record_schema=self.record_schema)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": str(self.url), "schema": self.schema, "labels": list(self.labels),
                "wave": self.wave, "record_schema": self.record_schema}


@dataclass(frozen=True)
class Fleet:
    path: Path
    targets: list[Target]
    wave_size: int = _OPTIONS["wave_size"]
    max_failures: int = _OPTIONS["max_failures"]
    parallel: int = _OPTIONS["parallel"]

    @property
    def name(self) -> str:
        return self.path.stem


def path_of(settings: Settings, given: str | Path | None) -> Path:
    """``--fleet PATH`` (relative to the working folder), else ``fleet.toml`` beside ``tasks.py``."""
    if given:
        return Path(given).resolve()
    return settings.root / DEFAULT_FILE


def load(path: Path, env: Mapping[str, str] | None = None) -> Fleet:
    """Read and check the fleet file. Raises ConfigError naming the target and the fix."""
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no fleet file at {path}; write one (see docs/migrations.md, Fleet deploys) "
                          "or pass --fleet PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}; fix the file") from None
    options = _options(path, data.get("fleet", {}))
    source = data.get("source")
    raw = data.get("targets")
    if source is not None:
        if raw:
            raise ConfigError(f"{path.name} has both [source] and [[targets]]; keep one of them")
        targets = _from_source(path, source, env)
    else:
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{path.name} lists no targets; add [[targets]] entries with a name and a url, "
                              "or a [source] query")
        targets = [_target(path, i, entry, env) for i, entry in enumerate(raw, 1)]
    _unique(path, targets)
    return Fleet(path=path, targets=targets, wave_size=options["wave_size"],
                 max_failures=_threshold(path, options["max_failures"], len(targets)), parallel=options["parallel"])


_SHARE = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")


def _threshold(path: Path, value: Any, count: int) -> int:
    """``max_failures`` as a count: a whole number, or a share of the fleet ("5%": 5 of 100 targets)."""
    if isinstance(value, str):
        share = _SHARE.match(value.strip())
        if share is None or float(share.group(1)) > 100:
            raise ConfigError(f"{path.name}: [fleet] max_failures = {value!r} must be a whole number or a share "
                              "such as \"5%\"")
        return int(count * float(share.group(1)) / 100)
    return int(value)


_COLUMNS = ("name", "url", "schema", "labels", "wave")


def _from_source(path: Path, source: Any, env: Mapping[str, str]) -> list[Target]:
    """The targets a ``[source]`` query returns from its control database."""
    if not isinstance(source, dict) or set(source) - {"url", "query"} or not all(
            isinstance(source.get(k), str) and source[k].strip() for k in ("url", "query")):
        raise ConfigError(f"{path.name}: [source] needs url = \"...\" and query = \"SELECT name, url, ... \" "
                          "and nothing else")
    where = f"{path.name} [source]"
    _refuse_literal_password(where, source["url"])
    control = DatabaseUrl.parse(_expand(where, source["url"], env))
    try:
        with Database.connect(control) as db:
            rows = db.rows(source["query"])
    except SqlFailure as failure:
        raise ConfigError(f"{where}: the query failed on {control}: {failure}; fix the query") from None
    except PgShiftError as error:
        raise ConfigError(f"{where}: cannot read the targets from {control}: {error}") from None
    if not rows:
        raise ConfigError(f"{where}: the query returned no targets from {control}")
    if not 2 <= len(rows[0]) <= len(_COLUMNS):
        raise ConfigError(f"{where}: the query must return {', '.join(_COLUMNS)} (name and url at least), "
                          f"in that order; it returned {len(rows[0])} column(s)")
    entries = [{k: v for k, v in zip(_COLUMNS, row, strict=False) if v is not None} for row in rows]
    for entry in entries:
        if isinstance(entry.get("labels"), tuple):
            entry["labels"] = list(entry["labels"])
    return [_target(path, i, entry, env, committed=False) for i, entry in enumerate(entries, 1)]


def _options(path: Path, section: Any) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ConfigError(f"{path.name}: [fleet] must be a table of settings")
    unknown = set(section) - set(_OPTIONS)
    if unknown:
        raise ConfigError(f"{path.name}: unknown [fleet] setting {sorted(unknown)[0]!r}; known: {', '.join(_OPTIONS)}")
    found = {**_OPTIONS, **section}
    for key, value in found.items():
        if key == "max_failures" and isinstance(value, str):
            continue  # a share, checked once the targets are known
        lowest = 0 if key == "max_failures" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise ConfigError(f"{path.name}: [fleet] {key} = {value!r} must be a whole number of at least {lowest}")
    return found


def _target(path: Path, index: int, entry: Any, env: Mapping[str, str], *, committed: bool = True) -> Target:
    where = f"{path.name} target #{index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a table; write it as [[targets]] with name = ... and url = ...")
    unknown = set(entry) - {"name", "url", "schema", "labels", "wave", "record_schema"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; known: name, url, schema, labels, wave, "
                          "record_schema")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be letters, digits, '.', '_' or '-' (up to 63), got {name!r}")
    where = f"{path.name} target {name!r}"
    raw_url = entry.get("url")
    if not isinstance(raw_url, str) or not raw_url.strip():
        raise ConfigError(f"{where} has no url; add url = \"postgresql://user:${{PASSWORD_VAR}}@host/db\"")
    if committed:
        _refuse_literal_password(where, raw_url)
    try:
        url = DatabaseUrl.parse(_expand(where, raw_url, env))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    schema = entry.get("schema")
    if schema is not None and (not isinstance(schema, str) or not _SCHEMA.fullmatch(schema)):
        raise ConfigError(f"{where}: schema must be a plain identifier (letters, digits, _), got {schema!r}")
    record = entry.get("record_schema") or (f"pgshift_{schema}" if schema is not None else settings_module.DEFAULTS[
        "record_schema"])
    record = settings_module.record_schema(record, f"{where}: record_schema")
    labels = entry.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ConfigError(f"{where}: labels must be a list of strings, e.g. labels = [\"eu\"]")
    wave = entry.get("wave")
    if wave is not None and (not isinstance(wave, int) or isinstance(wave, bool) or wave < 0):
        raise ConfigError(f"{where}: wave must be a whole number (0 for a canary), got {wave!r}")
    return Target(name=name, url=url, schema=schema, labels=tuple(labels), wave=wave, record_schema=record)


def _refuse_literal_password(where: str, raw: str) -> None:
    """The file is committed: a password in it must come from the environment."""
    rest = raw.split("://", 1)[-1]
    head = rest.split("/", 1)[0]
    userinfo = head.rsplit("@", 1)[0] if "@" in head else rest.rsplit("@", 1)[0] if "@" in rest else ""
    password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
    query = _QUERY_PASSWORD.search(rest)
    for value in (password, query.group(1) if query else ""):
        if value and _VARIABLE.sub("", value):
            raise ConfigError(f"{where}: the url holds a literal password, and the fleet file is committed; "
                              "write it as ${VAR} (postgresql://user:${DB_PASSWORD}@host/db) and set VAR "
                              "in the environment")


def _expand(where: str, raw: str, env: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{where}: ${{{name}}} is not set in the environment; export {name} and run again")
        return env[name]

    return _VARIABLE.sub(value, raw.strip())


def _unique(path: Path, targets: list[Target]) -> None:
    names: set[str] = set()
    databases: dict[tuple[str | None, int | None, str, str], str] = {}
    for t in targets:
        if t.name in names:
            raise ConfigError(f"{path.name}: two targets are named {t.name!r}; give each a name of its own")
        names.add(t.name)
        key = (t.url.host, t.url.port, t.url.dbname, t.record_schema)
        if key in databases:
            raise ConfigError(f"{path.name}: targets {databases[key]!r} and {t.name!r} are the same database "
                              f"({t.url.dbname}) with one record ({t.record_schema}); list it once, or give each "
                              "tenant its own schema")
        databases[key] = t.name
