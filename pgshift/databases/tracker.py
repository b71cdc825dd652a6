"""An incremental catalog snapshot: ``Tracker.take`` gives the same ``Snapshot`` as ``snapshot.take``
but prints again only the definitions that may have changed since the tracker's previous one.

Every row of a snapshot has an owner (``snapshot.TYPE``): a relation, a type or a function. One cheap
query (no ``pg_get_*def``) reads each owner's signature: the versions (xmin, and cmin for this
transaction's rows) of the catalog rows it is printed from. An owner whose signature differs from the
previous one's, or that is new, is printed again, and so is every owner of an object that depends on
it (``pg_depend``): a view when a column it reads is renamed, a table when the type of a column or the
function of a trigger is. A definition prints the names of what it references, and a name lives in
the catalog rows of its own object, so direct dependents are enough. A name also decides what an
unqualified name finds: when an object on the search path appears, goes or changes name, the owners
on the path with that name are printed again too, and the snapshot is taken whole if a system object
(pg_catalog, the session's temporary schema) has it. What no owner holds (schemas, extensions and
their members, operators, operator classes, collations, access methods, languages, text search
objects, the settings that change how values print, the database itself) is one token: when it
changes, the snapshot is taken whole.

Signatures compare with the previous snapshot's, whatever happened in between: a transaction rolled
back brings back the older rows, whose versions differ from those seen inside it. Read while another
session changes the schema, a snapshot may mix two states (the next one is right again): it is meant
for scratch databases that one session changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from pgshift.databases import snapshot
from pgshift.databases.db import Database
from pgshift.databases.snapshot import PROC, SKIP, TYPE, Snapshot

# The OIDs of objects made by initdb stop below this; a schema's objects are all above it.
_FIRST_NORMAL = 16384


def _version(alias: str) -> str:
    """The version of row ``alias`` as two numbers ``v, s``: its xmin (by its distance from a fixed one,
    which does not depend on when it is read, and costs less than reading it as text) and, for a row
    this transaction wrote, its cmin (a row that a later command of the same transaction replaced has
    the same xmin), else -1."""
    return (f"CASE WHEN {alias}.xmin = '1'::xid OR {alias}.xmin = '2'::xid THEN 0 "  # initdb's: no age
            f"ELSE (k.base - age({alias}.xmin)) & 4294967295 END, "
            f"CASE WHEN {alias}.xmin = k.mine THEN {alias}.cmin::text::bigint ELSE -1 END")


# (base, mine): the age of a fixed xid (the first normal one), and this transaction's xid, if it has one
_K = "k AS (SELECT age('3'::xid)::bigint AS base, (txid_current_if_assigned() % 4294967296)::text::xid AS mine)"


def _fold(v: str, s: str) -> str:
    """The versions (``v``, ``s``) of some rows, in any order, as one text: how many, and the sums of two
    31-bit hashes of each (of v, each seeded with s; exact sums: a row more, less or changed changes them)."""
    return (f"count(*)::text || ',' || coalesce(sum((hashint8extended({v}, {s}) >> 33)::int), 0)::text || ',' "
            f"|| coalesce(sum((hashint8extended({v}, {s} + 4294967296) >> 33)::int), 0)::text")


def _type_owner(t: str, e: str) -> str:
    """The owner of type ``t``: its relation (a row type), the owner of its element (``e``, an array
    of it), or the type itself."""
    return (f"CASE WHEN {t}.typrelid <> 0 THEN {t}.typrelid::bigint WHEN {e}.typrelid <> 0 THEN {e}.typrelid::bigint "
            f"WHEN {e}.oid IS NOT NULL THEN {e}.oid::bigint + {TYPE} ELSE {t}.oid::bigint + {TYPE} END")


# Printed from, but no owner's: when one changes the snapshot is taken whole. The settings that change
# how definitions print, the database (a copy has the catalog rows of its source), and rows of these
# catalogs: all of a few small ones; of the hundreds of collations and operators that initdb makes,
# which nothing renames (operators cannot be), those made since.
_SETTINGS = ("search_path", "DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits", "quote_all_identifiers",
             "bytea_output", "lc_monetary", "lc_numeric", "standard_conforming_strings")
_CONTEXT = ("concat_ws('|', current_database(), "
            "(SELECT d.oid FROM pg_database d WHERE d.datname = current_database())::text, "
            "current_schemas(true)::text, "
            + ", ".join(f"current_setting('{name}')" for name in _SETTINGS) + ")")
_AUX = ("pg_namespace", "pg_extension", "pg_opclass", "pg_opfamily", "pg_am", "pg_language", "pg_ts_config",
        "pg_ts_dict", "pg_ts_parser", "pg_ts_template")
_AUX_ROWS = "".join(f"\n    UNION ALL SELECT 0, {_version('x')} FROM k, {catalog} x" for catalog in _AUX) + "".join(
    f"\n    UNION ALL SELECT 0, {_version('x')} FROM k, {catalog} x WHERE x.oid >= {_FIRST_NORMAL}"
    for catalog in ("pg_collation", "pg_operator")) + (
    f"\n    UNION ALL SELECT 0, {_version('x')} FROM k, pg_depend x WHERE x.refclassid = 'pg_extension'::regclass")

# rows (owner, signature); owner 0 holds what no owner has (_AUX_ROWS), -1 is the context. Every
# object made after initdb has an owner here, whether the snapshot shows it or not (the session's
# temporary tables, toast tables, the pgshift schema): an owner with no rows costs nothing, and
# leaving them in keeps each catalog one range scan.
_SIGNATURES = f"""
WITH {_K}, part(owner, v, s) AS (
    SELECT x.oid::bigint, {_version('x')} FROM k, pg_class x WHERE x.oid >= {_FIRST_NORMAL}
    UNION ALL SELECT {_type_owner('x', 'e')}, {_version('x')}
              FROM k, pg_type x LEFT JOIN pg_type e ON e.oid = x.typelem AND e.typarray = x.oid
              WHERE x.oid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.attrelid::bigint, {_version('x')} FROM k, pg_attribute x
              WHERE x.attrelid >= {_FIRST_NORMAL} AND x.attnum > 0
    UNION ALL SELECT x.adrelid::bigint, {_version('x')} FROM k, pg_attrdef x WHERE x.adrelid >= {_FIRST_NORMAL}
    UNION ALL SELECT CASE WHEN x.conrelid <> 0 THEN x.conrelid::bigint ELSE x.contypid::bigint + {TYPE} END,
                     {_version('x')} FROM k, pg_constraint x WHERE x.oid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.indexrelid::bigint, {_version('x')} FROM k, pg_index x WHERE x.indexrelid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.tgrelid::bigint, {_version('x')} FROM k, pg_trigger x WHERE x.tgrelid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.ev_class::bigint, {_version('x')} FROM k, pg_rewrite x WHERE x.ev_class >= {_FIRST_NORMAL}
    UNION ALL SELECT x.seqrelid::bigint, {_version('x')} FROM k, pg_sequence x WHERE x.seqrelid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.inhrelid::bigint, {_version('x')} FROM k, pg_inherits x WHERE x.inhrelid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.partrelid::bigint, {_version('x')} FROM k, pg_partitioned_table x
              WHERE x.partrelid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.enumtypid::bigint + {TYPE}, {_version('x')} FROM k, pg_enum x
    UNION ALL SELECT x.oid::bigint + {PROC}, {_version('x')} FROM k, pg_proc x WHERE x.oid >= {_FIRST_NORMAL}
    UNION ALL SELECT x.objid::bigint, {_version('x')} FROM k, pg_sequence s  /* a sequence's OWNED BY */
              JOIN pg_depend x ON x.classid = 'pg_class'::regclass AND x.objid = s.seqrelid
              WHERE x.refclassid = 'pg_class'::regclass AND x.deptype IN ('a', 'i'){_AUX_ROWS})
SELECT owner, {_fold('v', 's')} FROM part GROUP BY owner
UNION ALL SELECT -1, {_CONTEXT}"""

# rows (owner): the owners of what depends on an object of the relations $1, types $2, functions $3
_DEPENDENTS = f"""
WITH m(classid, objid) AS (
    SELECT 'pg_class'::regclass::oid, r FROM unnest($1::oid[]) r
    UNION ALL SELECT 'pg_type'::regclass::oid, t FROM unnest($2::oid[]) t
    UNION ALL SELECT 'pg_type'::regclass::oid, c.reltype FROM pg_class c WHERE c.oid = ANY($1) AND c.reltype <> 0
    UNION ALL SELECT 'pg_type'::regclass::oid, t.typarray FROM pg_type t
              WHERE (t.oid = ANY($2) OR t.oid IN (SELECT c.reltype FROM pg_class c WHERE c.oid = ANY($1)))
              AND t.typarray <> 0
    UNION ALL SELECT 'pg_constraint'::regclass::oid, x.oid FROM pg_constraint x WHERE x.conrelid = ANY($1)
    UNION ALL SELECT 'pg_constraint'::regclass::oid, x.oid FROM pg_constraint x WHERE x.contypid = ANY($2)
    UNION ALL SELECT 'pg_attrdef'::regclass::oid, x.oid FROM pg_attrdef x WHERE x.adrelid = ANY($1)
    UNION ALL SELECT 'pg_trigger'::regclass::oid, x.oid FROM pg_trigger x WHERE x.tgrelid = ANY($1)
    UNION ALL SELECT 'pg_rewrite'::regclass::oid, x.oid FROM pg_rewrite x WHERE x.ev_class = ANY($1)
    UNION ALL SELECT 'pg_proc'::regclass::oid, p FROM unnest($3::oid[]) p)
SELECT DISTINCT CASE d.classid
    WHEN 'pg_class'::regclass THEN d.objid::bigint
    WHEN 'pg_type'::regclass THEN (SELECT {_type_owner('t', 'e')} FROM pg_type t
                                   LEFT JOIN pg_type e ON e.oid = t.typelem AND e.typarray = t.oid
                                   WHERE t.oid = d.objid)
    WHEN 'pg_constraint'::regclass THEN (SELECT CASE WHEN x.conrelid <> 0 THEN x.conrelid::bigint
                                                     ELSE x.contypid::bigint + {TYPE} END
                                         FROM pg_constraint x WHERE x.oid = d.objid)
    WHEN 'pg_attrdef'::regclass THEN (SELECT x.adrelid::bigint FROM pg_attrdef x WHERE x.oid = d.objid)
    WHEN 'pg_trigger'::regclass THEN (SELECT x.tgrelid::bigint FROM pg_trigger x WHERE x.oid = d.objid)
    WHEN 'pg_rewrite'::regclass THEN (SELECT x.ev_class::bigint FROM pg_rewrite x WHERE x.oid = d.objid)
    WHEN 'pg_proc'::regclass THEN d.objid::bigint + {PROC} END
FROM m JOIN pg_depend d ON d.refclassid = m.classid AND d.refobjid = m.objid"""

# rows (true) when a relation, type or function named in $1 lives in a schema on the search path that
# the snapshot skips (pg_catalog, the session's temporary schema)
_SHADOWED = f"""
WITH n AS (SELECT n.oid FROM pg_namespace n WHERE n.nspname = ANY(current_schemas(true)) AND NOT ({SKIP}))
SELECT true WHERE EXISTS (SELECT FROM pg_class x WHERE x.relname = ANY($1) AND x.relnamespace IN (SELECT oid FROM n))
OR EXISTS (SELECT FROM pg_type x WHERE x.typname = ANY($1) AND x.typnamespace IN (SELECT oid FROM n))
OR EXISTS (SELECT FROM pg_proc x WHERE x.proname = ANY($1) AND x.pronamespace IN (SELECT oid FROM n))"""

_OIDS = "(oid[], oid[], oid[])"


def _names(some: bool) -> str:
    """rows (owner, name, namespace, whether that is on the search path): of every relation, type and
    function, or (``some``) of the relations $1, types $2 and functions $3."""
    def only(param: int) -> str:
        return f" AND x.oid = ANY(${param})" if some else ""

    on_path = "IN (SELECT n.oid FROM pg_namespace n WHERE n.nspname = ANY(current_schemas(true)))"
    return f"""
SELECT x.oid::bigint, x.relname::text, x.relnamespace, x.relnamespace {on_path}
FROM pg_class x WHERE x.oid >= {_FIRST_NORMAL}{only(1)}
UNION ALL SELECT x.oid::bigint + {TYPE}, x.typname::text, x.typnamespace, x.typnamespace {on_path}
FROM pg_type x WHERE x.oid >= {_FIRST_NORMAL} AND x.typrelid = 0{only(2)}
AND NOT EXISTS (SELECT FROM pg_type e WHERE e.oid = x.typelem AND e.typarray = x.oid)
UNION ALL SELECT x.oid::bigint + {PROC}, x.proname::text, x.pronamespace, x.pronamespace {on_path}
FROM pg_proc x WHERE x.oid >= {_FIRST_NORMAL}{only(3)}"""


class _Name(NamedTuple):
    name: str
    nsp: int
    on_path: bool


def _read_names(rows: list[tuple[Any, ...]]) -> dict[int, _Name]:
    return {int(owner): _Name(str(name), int(nsp), bool(on_path)) for owner, name, nsp, on_path in rows}


@dataclass(frozen=True)
class _State:
    token: str
    signatures: dict[int, str]
    names: dict[int, _Name]
    owned: dict[int, dict[str, str]]  # owner -> its rows of the snapshot (key -> definition)
    objects: dict[str, str]
    unsigned: bool = False  # rows whose owner has no signature (made by initdb?): always taken whole


class Tracker:
    """Snapshots of one database, each one printing again only what may have changed since the last
    (the first, and any after a change of schema, extension, setting or database, is whole)."""

    def __init__(self) -> None:
        self._state: _State | None = None
        self.printed = 0  # owners printed again by the last take (all of them when it was whole)
        self.owners = 0  # owners the last take found

    def reset(self) -> None:
        """Forget the previous snapshot: the next is taken whole."""
        self._state = None

    def take(self, db: Database) -> Snapshot:
        """The snapshot of the database ``db`` is connected to, equal to ``snapshot.take(db)``."""
        signatures = dict(snapshot.run_prepared(db, "pgshift_signatures", f"AS {_SIGNATURES}"))
        token = f"{signatures.pop(-1)} {signatures.pop(0)}"
        state = self._state
        if state is None or state.token != token or state.unsigned:
            return self._whole(db, token, signatures)
        changed = {o for o, s in signatures.items() if state.signatures.get(o) != s}
        vanished = state.signatures.keys() - signatures.keys()
        names = state.names
        if changed or vanished:
            names = {o: n for o, n in names.items() if o not in vanished}
            if changed:
                names.update(_read_names(snapshot.run_prepared(db, "pgshift_some_names", f"{_OIDS} AS {_names(True)}",
                                                               _arguments(changed))))
        hidden = _renamed(changed | vanished, state.names, names)
        if hidden and snapshot.run_prepared(db, "pgshift_shadowed", f"(text[]) AS {_SHADOWED}",
                                       f"({db.literal(sorted(hidden))})"):
            return self._whole(db, token, signatures)
        seeds = changed | {o for o, n in names.items() if n.on_path and n.name in hidden}
        again = seeds
        if seeds:
            rows = snapshot.run_prepared(db, "pgshift_dependents", f"{_OIDS} AS {_DEPENDENTS}", _arguments(seeds))
            again = (seeds | {int(owner) for owner, in rows if owner is not None}) & signatures.keys()
        objects = dict(state.objects)
        owned = dict(state.owned)
        for owner in again | vanished:
            for key in owned.pop(owner, {}):
                objects.pop(key, None)
        if again:
            rows = snapshot.run_prepared(db, "pgshift_snapshot_some", f"{_OIDS} AS {snapshot.SOME}", _arguments(again))
            _add(rows, owned, objects)
        self._state = _State(token, signatures, names, owned, objects)
        self.printed, self.owners = len(again), len(signatures)
        return Snapshot(dict(objects))

    def _whole(self, db: Database, token: str, signatures: dict[int, str]) -> Snapshot:
        names = _read_names(snapshot.run_prepared(db, "pgshift_names", f"AS {_names(False)}"))
        owned: dict[int, dict[str, str]] = {}
        objects: dict[str, str] = {}
        _add(snapshot.run_prepared(db, "pgshift_snapshot_owned", f"AS {snapshot.OWNED}"), owned, objects)
        unsigned = any(o not in signatures for o in owned if o < snapshot.SCHEMA)
        self._state = _State(token, signatures, names, owned, objects, unsigned)
        self.printed = self.owners = len(signatures)
        return Snapshot(dict(objects))


def _renamed(owners: set[int], before: dict[int, _Name], now: dict[int, _Name]) -> set[str]:
    """The names on the search path that owners took or gave up (a new, dropped, renamed or moved
    object; any changed function, whose defaults and variadics take part in finding it by name)."""
    found: set[str] = set()
    for owner in owners:
        old, new = before.get(owner), now.get(owner)
        if old != new or owner // TYPE == PROC // TYPE:
            found |= {n.name for n in (old, new) if n is not None and n.on_path}
    return found


def _add(rows: list[tuple[Any, ...]], owned: dict[int, dict[str, str]], objects: dict[str, str]) -> None:
    for owner, key, definition in rows:
        owned.setdefault(int(owner), {})[str(key)] = str(definition)
        objects[str(key)] = str(definition)


def _arguments(owners: set[int]) -> str:
    """EXECUTE's arguments for ``_OIDS``: the relations, types and functions among ``owners``."""
    kinds: list[list[int]] = [[], [], []]
    for owner in owners:
        tag, oid = divmod(owner, TYPE)
        if tag < len(kinds):
            kinds[tag].append(oid)
    return "(" + ", ".join(f"'{{{','.join(map(str, oids))}}}'" for oids in kinds) + ")"
