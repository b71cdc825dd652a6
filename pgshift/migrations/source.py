"""The migrations folder: ``YYYYMMDDHHMMSS_name.sql`` files, each with a ``.rollback.sql`` partner.

The file layout is yoyo-migrations' raw SQL layout (a test reads the same folder with yoyo and gets
the same migrations in the same order), so a team can move either way. Reading is ours: it runs on
every ``status`` call, and importing yoyo alone costs a tenth of that call's budget.

A checksum covers the forward file's content with line endings and a byte-order mark normalised, so
a re-saved file on another OS is not an edit, but any real edit is.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

from pgshift.errors import ConfigError
from pgshift.settings import Settings

ID_PATTERN = re.compile(r"^(?P<stamp>\d{14})_(?P<name>[a-z0-9_]+)$")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
ROLLBACK_SUFFIX = ".rollback.sql"
NOT_MIGRATIONS = {"seed.sql", "schema.sql"}
_HEADER = re.compile(r"^--\s*transactional\s*:\s*(true|false)\s*$", re.IGNORECASE | re.MULTILINE)
_FORWARD_ONLY = re.compile(r"^--\s*forward_only\s*:\s*true\s*$", re.IGNORECASE | re.MULTILINE)
# The line that marks the template ``dev.migrate NAME`` writes: a file that still has it and no statement
# is not written yet, so it is not applied. Any other file with no statement (a placeholder whose
# statements moved elsewhere) is applied as a no-op and recorded, its checksum guarding later edits. Files
# written before the marker existed carry the old template's sentence instead.
UNWRITTEN_MARK = "-- pgshift: template not written yet"
_OLD_TEMPLATE_MARK = "A file with no statements is never applied."


def transactional_header(sql: str) -> bool | None:
    """A ``-- transactional: false`` (or true) header line in ``sql``, if the author wrote one."""
    found = _HEADER.search(sql)
    return None if found is None else found.group(1).lower() == "true"


def normalise(raw: bytes, name: str | Path = "the file") -> str:
    """The text of a file's bytes; ConfigError naming ``name`` and the offending byte unless UTF-8."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, start) + 1
        raise ConfigError(f"{name}: byte 0x{raw[start]:02X} at offset {start} (line {line}) "
                          "is not UTF-8; save the file as UTF-8 (iconv -f latin1 -t utf-8 converts Latin-1)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    id: str
    folder: Path
    sql: str
    has_rollback: bool
    one_way: bool = False  # the whole history is forward-only (config ``forward_only``)

    @cached_property
    def path(self) -> Path:
        return self.folder / f"{self.id}.sql"

    @cached_property
    def rollback_path(self) -> Path | None:
        return self.folder / f"{self.id}{ROLLBACK_SUFFIX}" if self.has_rollback else None

    @cached_property
    def checksum(self) -> str:
        return checksum(self.sql)

    @cached_property
    def empty(self) -> bool:
        """True for the template ``dev.migrate NAME`` wrote that nobody has filled in yet (its mark and
        no statement): it is not applied. A file of comments alone without the mark is not empty in this
        sense: it is applied as a no-op."""
        if UNWRITTEN_MARK not in self.sql and _OLD_TEMPLATE_MARK not in self.sql:
            return False
        from pgshift.migrations import sqltext  # its lexer's regex is compiled on import; status rarely needs it

        return sqltext.is_empty(self.sql)

    @cached_property
    def may_need_parse(self) -> bool:
        """False when no statement in the file can refuse a transaction (see ``sqltext.NEEDS_PARSE``)."""
        from pgshift.migrations import sqltext

        return sqltext.may_need_parse(self.sql)

    @property
    def forced_transactional(self) -> bool | None:
        """A ``-- transactional: false`` (or true) header line, if the author wrote one."""
        return transactional_header(self.sql)

    @property
    def forward_only(self) -> bool:
        """A ``-- forward_only: true`` header line: the migration has no rollback by design (an enum's
        ``ADD VALUE``, a data fix), so no check expects one and no rollback crosses it. Or the whole
        history is forward-only (config ``forward_only``)."""
        return self.one_way or _FORWARD_ONLY.search(self.sql) is not None

    @property
    def forward_only_because(self) -> str:
        """Why it is forward-only, for a message."""
        return ("the history is forward-only (config pgshift.forward_only: true)" if self.one_way
                else f"'-- forward_only: true' in {self.id}.sql")

    def rollback_sql(self) -> str | None:
        return None if self.rollback_path is None else normalise(self.rollback_path.read_bytes(), self.rollback_path)


def of(settings: Settings) -> list[Migration]:
    """The project's migrations, as its settings describe them (the folder; a forward-only history)."""
    return read(settings.migrations_dir, forward_only=settings.forward_only)


def read(folder: Path, *, forward_only: bool = False) -> list[Migration]:
    """Every migration in the folder, in apply order (by id). Raises ConfigError on a stray file."""
    if not folder.is_dir():
        raise ConfigError(f"migrations folder {folder} does not exist; create it or set pgshift.migrations_dir")
    forward: list[str] = []
    rollbacks: set[str] = set()
    # Names stay strings and each file is opened once, unbuffered: status reads every file on every
    # call, and a Path per file costs more than reading it.
    with os.scandir(folder) as entries:
        listing = [(entry.name, entry.is_file()) for entry in entries]
    for name, is_file in listing:
        if not name.endswith(".sql") or name in NOT_MIGRATIONS or not is_file:
            continue
        if name.endswith(ROLLBACK_SUFFIX):
            rollbacks.add(name[: -len(ROLLBACK_SUFFIX)])
            continue
        stem = name[:-4]
        if not ID_PATTERN.match(stem):
            raise ConfigError(
                f"{folder / name} is not named YYYYMMDDHHMMSS_name.sql; rename it (inv dev.migrate NAME makes one)")
        forward.append(stem)
    orphans = sorted(rollbacks.difference(forward))
    if orphans:
        raise ConfigError(f"{folder / (orphans[0] + ROLLBACK_SUFFIX)} has no forward migration {orphans[0]}.sql; "
                          "restore it or delete the rollback file")
    prefix = os.path.join(folder, "")
    forward.sort()
    return [Migration(id=i, folder=folder, sql=normalise(_read(f"{prefix}{i}.sql"), f"{prefix}{i}.sql"),
                      has_rollback=i in rollbacks, one_way=forward_only) for i in forward]


def _read(path: str) -> bytes:
    with open(path, "rb", buffering=0) as handle:
        return handle.readall()


TEMPLATE = """-- {id}
{mark}
-- Write the change below. Each migration runs in one transaction, recorded in the same transaction.
-- Statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY, ...) are detected and run
-- one by one instead, journaled so a crash can resume. Until a statement is written below, this file
-- is not applied; a file of comments alone without the line above is applied as a no-op.

"""
ROLLBACK_TEMPLATE = """-- Rollback of {id}: undo exactly what the forward migration does, in reverse order.

"""


def check_name(name: str, existing: list[Migration]) -> None:
    """Refuse a bad or taken migration name before any work is done."""
    if not NAME_PATTERN.match(name) or len(name) > 80:
        raise ConfigError(
            f"migration name {name!r} is not valid; use lowercase letters, digits and underscores, "
            "starting with a letter, under 80 characters (e.g. add_user_preferences)")
    taken = [m.id for m in existing if m.id[15:] == name]
    if taken:
        raise ConfigError(f"a migration named {name!r} exists already ({taken[0]}.sql); choose another name")


def create(folder: Path, name: str, now: datetime | None = None, *, existing: list[Migration] | None = None,
           render: Callable[[str], tuple[str, str]] | None = None) -> Migration:
    """Write a new migration pair after the newest of ``existing`` (default: the folder as it is):
    the template, or what ``render(id)`` gives (forward, rollback). Raises ConfigError for a bad or
    taken name."""
    existing = read(folder) if existing is None else existing
    check_name(name, existing)
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    newest = existing[-1].id[:14] if existing else ""
    if stamp <= newest:  # two in one second, or a clock behind the newest file: keep the order
        stamp = str(int(newest) + 1)
    ident = f"{stamp}_{name}"
    text, rollback = render(ident) if render else (TEMPLATE.format(id=ident, mark=UNWRITTEN_MARK),
                                                   ROLLBACK_TEMPLATE.format(id=ident))
    with open(folder / f"{ident}.sql", "x") as handle:
        handle.write(text)
    with open(folder / f"{ident}{ROLLBACK_SUFFIX}", "x") as handle:
        handle.write(rollback)
    return Migration(id=ident, folder=folder, sql=normalise(text.encode()), has_rollback=True)
