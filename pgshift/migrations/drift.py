"""Drift, as status reports it, and the reference it is measured against.

The reference is a catalog snapshot (``pgshift.databases.snapshot``) of what the applied migrations
made, stored in ``pgshift.schema_snapshots`` under a key of the applied set (ids and checksums). A
run that applies migrations stores the next one: the stored reference, changed by exactly what that
run changed in the catalog. A hand change made before the run stays drift after it. ``compare``
then checks the live catalog against the reference in one query. Where none is stored for the
applied set (a database migrated before references were kept, a rollback to a set never stored),
``pgshift.schema.drift`` replays the migrations into a shadow database once and stores the result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from pgshift.databases import snapshot
from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import PgShiftError
from pgshift.migrations import history
from pgshift.migrations.source import Migration

TABLE = history.SNAPSHOTS
SNAPSHOTS = "schema_snapshots"
KEEP = 20  # references kept: the newest, so a rollback to a recent set finds its own


@dataclass(frozen=True)
class DriftItem:
    kind: str    # table, column, index, function, ...
    name: str    # schema-qualified: public.users.nickname
    change: str  # unexpected (added by hand), missing (a migration made it, now gone), changed
    detail: str = ""

    def describe(self) -> str:
        what = {"unexpected": "added by hand (no migration made it)", "missing": "gone (a migration made it)",
                "changed": "changed by hand (differs from what the migrations made)"}.get(self.change, self.change)
        return f"{self.kind} {self.name}: {what}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Drift:
    """How the live schema differs from the schema its applied migrations make."""

    items: list[DriftItem]
    replayed: int      # migrations replayed into a shadow database (0: compared with a stored snapshot)
    shadow: str        # where that shadow database ran ("" when none was needed)
    method: str = "replay"  # "snapshot": against the stored reference; "replay": a shadow was needed
    stored: bool = False    # a replay stored its result as the reference, so the next status is quick

    def as_json(self) -> dict[str, Any]:
        return {"clean": not self.items, "method": self.method, "replayed": self.replayed, "shadow": self.shadow,
                "stored": self.stored, "differences": [asdict(i) for i in self.items]}


# The reference of a database nothing was applied to: what CREATE DATABASE ... TEMPLATE template0 holds.
EMPTY = {"schema public": ""}


def applied_key(records: dict[str, history.Record]) -> str:
    """The applied set as a key: "" when nothing is applied (its reference is ``EMPTY``)."""
    applied = [f"{r.id}:{r.checksum}" for r in records.values() if r.state == "applied"]
    return hashlib.sha256("\n".join(sorted(applied)).encode()).hexdigest()[:32] if applied else ""


def _half_done(records: dict[str, history.Record]) -> bool:
    """A migration stopped between statements: the catalog holds part of it, so no reference fits."""
    return any(r.state != "applied" and (not r.transactional or r.statements_done) for r in records.values())


def store(db: Database, key: str, records: dict[str, history.Record], objects: dict[str, str]) -> bool:
    """Keep ``objects`` as the reference for the applied set ``key``; False if the user may not write it."""
    applied = sorted(r.id for r in records.values() if r.state == "applied")
    try:
        db.execute(history.in_schema(db, history.SNAPSHOTS_DDL))
        db.execute(f"INSERT INTO {history.rel(db, SNAPSHOTS)} (applied, head, migrations, objects) "
                   "VALUES (%s, %s, %s, %s::jsonb) "
                   "ON CONFLICT (applied) DO UPDATE SET objects = EXCLUDED.objects, taken_at = now(), "
                   "catalog = NULL",
                   [key, applied[-1] if applied else None, len(applied), json.dumps(objects)])
        db.execute(f"DELETE FROM {history.rel(db, SNAPSHOTS)} WHERE applied NOT IN "
                   f"(SELECT applied FROM {history.rel(db, SNAPSHOTS)} ORDER BY taken_at DESC LIMIT {KEEP})")
    except SqlFailure:
        return False
    return True


def _load(db: Database, key: str) -> dict[str, str] | None:
    if not key:
        return dict(EMPTY)
    try:
        row = db.one(f"SELECT objects FROM {history.rel(db, SNAPSHOTS)} WHERE applied = %s", [key])
    except SqlFailure as failure:
        if failure.sqlstate in ("42P01", "3F000"):
            return None
        raise
    return dict(row[0]) if row else None


# An extension's version is the server's business, not a migration's.
_VERSION = re.compile(r"^version \S+ ")
_SAME = "regexp_replace({0}, '^version \\S+ ', '')"

# A fingerprint of the catalog rows the snapshot reads (directly or through the pg_get_*def functions):
# any DDL writes new row versions there, so a new transaction id, while ANALYZE and VACUUM update those
# rows in place and leave it. Equal to the fingerprint stored when a full comparison last found the
# schema clean, it proves the schema unchanged since, at a sixth of the cost of the comparison. A
# changed one (a temporary table, a TRUNCATE, drift) only means the full comparison runs.
_CATALOGS = ("pg_class", "pg_namespace", "pg_type", "pg_attribute", "pg_attrdef", "pg_trigger", "pg_proc",
             "pg_depend", "pg_constraint", "pg_sequence", "pg_inherits", "pg_index", "pg_rewrite",
             "pg_extension", "pg_enum", "pg_collation", "pg_partitioned_table", "pg_opclass", "pg_policy")
FINGERPRINT = ("(SELECT md5(string_agg(x, ' ' ORDER BY x)) FROM (" + " UNION ALL ".join(
    f"SELECT '{c} ' || count(*) || ' ' || coalesce(sum(hashint8(xmin::text::bigint)), 0) FROM pg_catalog.{c}"
    for c in _CATALOGS) + ") f(x))")

_COMPARE = f"""
WITH live(k, d) AS ({snapshot.SQL}),
ref(k, d) AS (@REF@),
found AS (SELECT coalesce(l.k, r.k) AS k, r.d AS was, l.d AS now FROM live l FULL JOIN ref r ON r.k = l.k
          WHERE {_SAME.format('l.d')} IS DISTINCT FROM {_SAME.format('r.d')})
SELECT NULL, NULL, NULL, @PRESENT@, {FINGERPRINT} UNION ALL SELECT k, was, now, NULL, NULL FROM found"""
_REF = "SELECT e.key, e.value FROM {table} s, jsonb_each_text(s.objects) e WHERE s.applied = '{key}'"
_NONE = "SELECT * FROM (VALUES ('schema public', '')) AS e(k, d)"


def _compare(ref: str, present: str) -> str:
    return _COMPARE.replace("@REF@", ref).replace("@PRESENT@", present)


def compare(db: Database, records: dict[str, history.Record]) -> list[DriftItem] | None:
    """The live catalog against the reference of the applied set, in one query; None when none is stored."""
    key = applied_key(records)
    if not key:
        rows = db.rows(_compare(_NONE, "true"))
    else:
        try:
            # A hex key: no quoting. The stored fingerprint first: equal, nothing changed since a clean check.
            unchanged = db.one(f"SELECT catalog = {FINGERPRINT} FROM {history.rel(db, SNAPSHOTS)} "
                               f"WHERE applied = '{key}'")
        except SqlFailure as failure:
            if failure.sqlstate in ("42P01", "3F000"):  # migrated before references were kept
                return None
            if failure.sqlstate != "42703":  # 42703: a table kept before fingerprints: compare in full
                raise
            unchanged = None
        if unchanged is not None and unchanged[0]:
            return []
        try:
            present = f"EXISTS (SELECT 1 FROM {history.rel(db, SNAPSHOTS)} WHERE applied = '{key}')"
            rows = db.rows(_compare(_REF.format(table=history.rel(db, SNAPSHOTS), key=key), present))
        except SqlFailure as failure:
            if failure.sqlstate in ("42P01", "3F000"):
                return None
            raise
    marker = next((row for row in rows if row[3] is not None), None)
    if marker is None or not marker[3]:
        return None
    found = items({str(k): (was, now) for k, was, now, present, _ in rows if present is None})
    if key and not found:  # clean: remember the catalog as it is, so the next status is one cheap query
        with suppress(SqlFailure):  # a read-only user: the next status compares in full again
            db.execute(f"ALTER TABLE {history.rel(db, SNAPSHOTS)} ADD COLUMN IF NOT EXISTS catalog text; "
                       f"UPDATE {history.rel(db, SNAPSHOTS)} SET catalog = {db.literal(marker[4])} "
                       f"WHERE applied = '{key}'")
    return found


def differ(expected: dict[str, str], live: dict[str, str]) -> list[DriftItem]:
    """Drift items between two snapshots' objects, compared as ``compare`` does on the server."""
    def same(key: str, value: str | None) -> str | None:
        return _VERSION.sub("", value) if value is not None and key.startswith("extension ") else value

    return items({k: (expected.get(k), live.get(k)) for k in expected.keys() | live.keys()
                  if same(k, expected.get(k)) != same(k, live.get(k))})


# Other tools' migration records, left in place when a project is adopted (``dev.import``): never part
# of the schema, so drift does not report them (nor their keys and indexes) and no generated migration
# drops them.
OTHER_TOOLS_TABLES = frozenset({"_prisma_migrations", "_yoyo_migration", "_yoyo_migrations", "_yoyo_log",
                                "_yoyo_version", "yoyo_lock"})
_ON_OTHER_TOOLS = re.compile(r"\bON (?:\S+\.)?(" + "|".join(sorted(OTHER_TOOLS_TABLES)) + r")\b")


def _other_tools(key: str, was: str | None, now: str | None) -> bool:
    parts = key.partition(" ")[2].split(".")
    if len(parts) > 1 and parts[1] in OTHER_TOOLS_TABLES:
        return True
    return any(text is not None and _ON_OTHER_TOOLS.search(text) for text in (was, now))


def items(found: dict[str, tuple[str | None, str | None]]) -> list[DriftItem]:
    """Drift items from ``key -> (reference, live)``, in snapshot order; a table that changed only by the
    columns reported on their own is not reported again."""
    columns_of = {k.split(" ", 1)[1].rsplit(".", 1)[0] for k in found if k.startswith("column ")}
    out: list[tuple[int, str, DriftItem]] = []
    for key, (was, now) in found.items():
        if _other_tools(key, was, now):
            continue
        kind, _, name = key.partition(" ")
        if kind == "table" and was is not None and now is not None and name in columns_of \
                and _without_columns(was) == _without_columns(now):
            continue
        if was is None:
            item = DriftItem(kind, name, "unexpected", now or "")
        elif now is None:
            item = DriftItem(kind, name, "missing", was)
        else:
            item = DriftItem(kind, name, "changed", _detail(kind, was, now))
        out.append((snapshot.rank(kind), name, item))
    return [item for _, _, item in sorted(out, key=lambda t: (t[0], t[1]))]


def _without_columns(definition: str) -> str:
    start = definition.find("columns (")
    end = definition.find(")", start)
    return definition if start < 0 or end < 0 else definition[:start] + definition[end + 1:]


def _detail(kind: str, was: str, now: str) -> str:
    if kind == "function":
        return "body or attributes differ: " + snapshot.changed(was, now)
    return snapshot.changed(was, now)


class Baseline(NamedTuple):
    key: str
    records: dict[str, history.Record]
    before: snapshot.Snapshot


@contextmanager
def kept(db: Database, migrations: list[Migration], *, always: bool = False,
         in_place: bool = False) -> Iterator[None]:
    """Around a run that applies ``migrations``: afterwards, the reference for what is then applied
    is stored (``always``: even if nothing is pending now, for a run that writes a migration first;
    ``in_place``: a run that changes the schema of the same applied set, a contract phase)."""
    baseline = before_apply(db, migrations, always=always)
    try:
        yield
    finally:
        with suppress(PgShiftError):  # best effort: a missing reference costs one replay, later
            after_apply(db, baseline, in_place=in_place)


def before_apply(db: Database, migrations: list[Migration], *, always: bool = False) -> Baseline | None:
    """The catalog before a run that may apply something; None when nothing is pending or no
    reference can follow (a migration stopped half-way, or the records moved while reading)."""
    records = history.records(db)
    if not always and all(m.empty or (m.id in records and records[m.id].state == "applied") for m in migrations):
        return None
    if _half_done(records):
        return None
    before = snapshot.take(db)
    if history.records(db) != records:
        return None
    return Baseline(applied_key(records), records, before)


def after_apply(db: Database, baseline: Baseline | None, *, in_place: bool = False) -> None:
    """Store the reference for what is applied now: the one before, changed by what this run changed.

    Best effort: without the earlier reference (or when anything moved meanwhile) nothing is stored,
    and the next status replays once instead."""
    if baseline is None:
        return
    records = history.records(db)
    key = applied_key(records)
    if (key == baseline.key and not in_place) or _half_done(records):
        return
    reference = _load(db, baseline.key)
    if reference is None:
        return
    after = snapshot.take(db)
    if history.records(db) != records:
        return
    old, new = baseline.before.objects, after.objects
    for name in old.keys() | new.keys():
        if old.get(name) != new.get(name):
            if name in new:
                reference[name] = new[name]
            else:
                reference.pop(name, None)
    store(db, key, records, reference)
