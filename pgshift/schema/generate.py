"""dev.generate: a typed SQLAlchemy 2 models module for the current schema.

The source is written from the catalogs (``catalog.read``) with no SQLAlchemy import, so it takes a
few tens of milliseconds where sqlacodegen takes seconds: DeclarativeBase, ``Mapped[...]`` columns,
named keys, checks, indexes and enums (so ``Base.metadata.create_all`` makes the same schema), and
relationships both ways for every foreign key.
"""

from __future__ import annotations

import keyword
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pgshift.databases import target
from pgshift.databases.db import Database
from pgshift.errors import ConfigError
from pgshift.schema import catalog, models_path
from pgshift.schema.catalog import Catalog, Column, Table
from pgshift.settings import Settings

_SIMPLE = {  # format_type -> (SQLAlchemy type, Python type)
    "bigint": ("sa.BigInteger()", "int"), "integer": ("sa.Integer()", "int"),
    "smallint": ("sa.SmallInteger()", "int"), "text": ("sa.Text()", "str"), "boolean": ("sa.Boolean()", "bool"),
    "character varying": ("sa.String()", "str"), "date": ("sa.Date()", "datetime.date"),
    "timestamp with time zone": ("sa.DateTime(timezone=True)", "datetime.datetime"),
    "timestamp without time zone": ("sa.DateTime()", "datetime.datetime"),
    "time without time zone": ("sa.Time()", "datetime.time"),
    "time with time zone": ("sa.Time(timezone=True)", "datetime.time"),
    "numeric": ("sa.Numeric()", "decimal.Decimal"), "real": ("sa.REAL()", "float"),
    "double precision": ("postgresql.DOUBLE_PRECISION()", "float"), "uuid": ("sa.Uuid()", "uuid.UUID"),
    "inet": ("postgresql.INET()", "str"), "cidr": ("postgresql.CIDR()", "str"),
    "macaddr": ("postgresql.MACADDR()", "str"), "jsonb": ("postgresql.JSONB()", "Any"),
    "json": ("sa.JSON()", "Any"), "bytea": ("sa.LargeBinary()", "bytes"),
    "interval": ("postgresql.INTERVAL()", "datetime.timedelta"), "tsvector": ("postgresql.TSVECTOR()", "str"),
}
_SIZED = [  # (pattern, SQLAlchemy type template, Python type)
    (re.compile(r"character varying\((\d+)\)"), "sa.String({0})", "str"),
    (re.compile(r"character\((\d+)\)"), "sa.CHAR({0})", "str"),
    (re.compile(r"numeric\((\d+),(\d+)\)"), "sa.Numeric({0}, {1})", "decimal.Decimal"),
    (re.compile(r"timestamp\((\d)\) with time zone"), "postgresql.TIMESTAMP(timezone=True, precision={0})",
     "datetime.datetime"),
    (re.compile(r"timestamp\((\d)\) without time zone"), "postgresql.TIMESTAMP(precision={0})", "datetime.datetime"),
    (re.compile(r"bit varying\((\d+)\)"), "postgresql.BIT({0}, varying=True)", "str"),
]
_RESERVED = {"metadata", "registry", "Base", "sa", "postgresql", "datetime", "decimal", "uuid", "Any",
             "Mapped", "mapped_column", "relationship", "DeclarativeBase", "EXTENSIONS", "SCHEMAS"}
_FK_ACTION = {"CASCADE", "RESTRICT", "SET NULL", "SET DEFAULT"}


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    models: int
    seconds: float        # reading the catalogs and writing the file
    check_seconds: float = 0.0  # importing it with SQLAlchemy and configuring its mappers


def run(settings: Settings, output: Path | None = None) -> GenerateResult:
    """Write the models module for the target's schema, then check that it imports cleanly."""
    path = output or models_path(settings)
    if path.is_dir():
        path = path / "models.py"
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: {path.parent} is a file, not a folder; give another --output")
    with target.connect(settings) as db:
        result = write(db, path)
    started = time.perf_counter()
    from pgshift.schema import orm

    orm.load(path)
    return GenerateResult(result.path, result.models, result.seconds, time.perf_counter() - started)


def write(db: Database, path: Path) -> GenerateResult:
    """Read the schema ``db`` is connected to and (re)write the models module at ``path``."""
    started = time.perf_counter()
    found = catalog.read(db)
    text = render(found)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return GenerateResult(path, len(found.tables), time.perf_counter() - started)


class _Names:
    """Python names for tables (classes), enums and user-defined types, unique and not reserved."""

    def __init__(self, found: Catalog) -> None:
        self.classes: dict[tuple[str, str], str] = {}
        taken = set(_RESERVED)
        for table in found.tables:
            name = _camel(_singular(table.name))
            if name in taken:
                name = _camel(f"{table.schema}_{_singular(table.name)}")
            while name in taken:
                name += "Model"
            taken.add(name)
            self.classes[(table.schema, table.name)] = name
        self.enums: dict[tuple[str, str], str] = {}
        for enum in found.enums:
            name = _identifier(f"{enum.name}_enum").upper()
            while name in taken:
                name += "_"
            taken.add(name)
            self.enums[(enum.schema, enum.name)] = name
        self.custom: dict[str, str] = {}
        self.taken = taken
        # Relationship attributes, unique per class: the referencing end of each foreign key first
        # (named for its column: author_id -> author), then the referenced end (the other table).
        tables = {(t.schema, t.name): t for t in found.tables}
        used = {key: set(_column_attributes(t).values()) for key, t in tables.items()}
        self.to_one: dict[tuple[str, str, str], str] = {}
        self.to_many: dict[tuple[str, str, str], str] = {}
        for key, table in tables.items():
            for fk in table.foreign_keys:
                if (fk.ref_schema, fk.ref_table) in tables:
                    self.to_one[(*key, fk.name)] = _attribute(_to_one_name(fk), used[key])
        for key, table in tables.items():
            for fk in table.foreign_keys:
                parent = (fk.ref_schema, fk.ref_table)
                if parent in tables:
                    self.to_many[(*key, fk.name)] = _attribute(_to_many_name(fk, table), used[parent])

    def custom_type(self, base: str) -> str:
        if base not in self.custom:
            name = _camel(base) + "Type"
            while name in self.taken:
                name += "_"
            self.taken.add(name)
            self.custom[base] = name
        return self.custom[base]


def render(found: Catalog) -> str:
    names = _Names(found)
    body: list[str] = []
    for table in found.tables:
        body.append(_render_table(table, found, names))
    used = "\n".join(body)
    head = [
        f'"""SQLAlchemy models for database {found.database}: generated by `inv dev.generate`.',
        "",
        "Do not edit: `inv dev.generate` (and `inv dev.migrate NAME`, when this file exists) rewrite it.",
        'Change schema.sql instead; views, functions and triggers are not modelled here."""',
        "",
        "from __future__ import annotations",
        "",
    ]
    imports = [f"import {m}" for m in ("datetime", "decimal", "uuid") if f"{m}." in used]
    if "Any" in used or names.custom:
        imports.append("from typing import Any")
    head += [*imports, *([""] if imports else []), "import sqlalchemy as sa"]
    if "postgresql." in used or found.enums:
        head.append("from sqlalchemy.dialects import postgresql")
    head += ["from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship", "",
             f"EXTENSIONS = {tuple(found.extensions)!r}  # CREATE EXTENSION these before create_all",
             f"SCHEMAS = {_schemas(found)!r}  # and CREATE SCHEMA these", "", "",
             "class Base(DeclarativeBase):", "    pass", ""]
    for enum in found.enums:
        values = ", ".join(repr(v) for v in enum.values)
        schema = f", schema={enum.schema!r}" if enum.schema != "public" else ""
        head.append(f"{names.enums[(enum.schema, enum.name)]} = postgresql.ENUM({values}, name={enum.name!r}"
                    f"{schema}, metadata=Base.metadata)")
    for base, cls in sorted(names.custom.items(), key=lambda item: item[1]):
        head += ["", "", f"class {cls}(sa.types.UserDefinedType[str]):",
                 f'    """The {base} type (from an extension); values are read and written as text."""', "",
                 "    cache_ok = True", "",
                 "    def get_col_spec(self, **kw: Any) -> str:", f"        return {base!r}"]
    text = "\n".join(head) + "\n\n\n" + "\n\n\n".join(body) + "\n"
    return re.sub(r"\n{4,}", "\n\n\n", text)


def _render_table(table: Table, found: Catalog, names: _Names) -> str:
    cls = names.classes[(table.schema, table.name)]
    lines = [f"class {cls}(Base):", f"    __tablename__ = {table.name!r}"]
    args = _table_args(table)
    if args or table.schema != "public":
        options = f"{{'schema': {table.schema!r}}}" if table.schema != "public" else ""
        inner = [f"        {a}," for a in args] + ([f"        {options},"] if options else [])
        lines += ["    __table_args__ = (", *inner, "    )"]
    lines.append("")
    attributes = _column_attributes(table)
    for column in table.columns:
        attr = attributes[column.name]
        lines.append(f"    {attr}: Mapped[{_python_type(column, names)}] = mapped_column("
                     f"{_column_args(column, attr, table, names)})")
    if not table.primary_key:  # SQLAlchemy maps no table without one; the table itself keeps none
        keys = ", ".join(repr(attributes[c.name]) for c in table.columns)
        lines += ["    # no primary key in the database: mapped on all its columns, so rows are told apart by value",
                  f"    __mapper_args__ = {{'primary_key': [{keys}]}}"]
    relations = _relationships(table, found, names)
    if relations:
        lines += ["", *relations]
    return "\n".join(lines)


def _schemas(found: Catalog) -> tuple[str, ...]:
    return tuple(sorted(({t.schema for t in found.tables} | {e.schema for e in found.enums}) - {"public"}))


def _table_args(table: Table) -> list[str]:
    args = []
    if table.primary_key:
        cols = ", ".join(repr(c) for c in table.primary_key)
        args.append(f"sa.PrimaryKeyConstraint({cols}, name={table.primary_key_name!r})")
    for fk in table.foreign_keys:
        ref = f"{fk.ref_schema}.{fk.ref_table}" if fk.ref_schema != "public" else fk.ref_table
        extra = "".join(f", {k}={v!r}" for k, v in (("ondelete", fk.on_delete), ("onupdate", fk.on_update)) if v)
        if fk.deferrable:
            extra += ", deferrable=True" + (", initially='DEFERRED'" if fk.deferred else "")
        args.append(f"sa.ForeignKeyConstraint({list(fk.columns)!r}, {[f'{ref}.{c}' for c in fk.ref_columns]!r}, "
                    f"name={fk.name!r}{extra})")
    for name, columns in table.uniques:
        args.append(f"sa.UniqueConstraint({', '.join(repr(c) for c in columns)}, name={name!r})")
    for name, expression in table.checks:
        args.append(f"sa.CheckConstraint({expression!r}, name={name!r})")
    for index in table.indexes:
        parts = [repr(index.name)] + [f"sa.text({e!r})" if is_expr else repr(e) for e, is_expr in index.elements]
        if index.unique:
            parts.append("unique=True")
        if index.method != "btree":
            parts.append(f"postgresql_using={index.method!r}")
        if index.include:
            parts.append(f"postgresql_include={list(index.include)!r}")
        if index.where:
            parts.append(f"postgresql_where=sa.text({index.where!r})")
        note = "" if index.simple else "  # opclass, ordering or collation not modelled"
        args.append(f"sa.Index({', '.join(parts)}){note}")
    return args


def _column_args(column: Column, attr: str, table: Table, names: _Names) -> str:
    parts = [] if attr == column.name else [repr(column.name)]
    parts.append(_sa_type(column, names))
    if column.identity:
        options = [f"always={column.identity == 'a'}"]
        if column.identity_start not in (None, 1):
            options.append(f"start={column.identity_start}")
        if column.identity_increment not in (None, 1):
            options.append(f"increment={column.identity_increment}")
        parts.append(f"sa.Identity({', '.join(options)})")
    if column.generated and column.default:
        parts.append(f"sa.Computed({column.default!r}, persisted={column.generated == 's'})")
    if column.name in table.primary_key:
        parts.append("primary_key=True")
        serial = bool(column.default and column.default.startswith("nextval("))
        if not column.identity and not serial:
            parts.append("autoincrement=False")
    if column.default and not column.generated and not (
            column.name in table.primary_key and column.default.startswith("nextval(")):
        parts.append(f"server_default=sa.text({column.default!r})")
    return ", ".join(parts)


def _sa_type(column: Column, names: _Names) -> str:
    if column.is_enum:
        return names.enums.get((column.base_schema, column.base), "sa.Text()") if not column.is_array else (
            f"postgresql.ARRAY({names.enums.get((column.base_schema, column.base), 'sa.Text()')})")
    element = column.type[:-2] if column.is_array and column.type.endswith("[]") else column.type
    known = _known(element)
    sa_type = known[0] if known is not None else f"{names.custom_type(column.base)}()"
    return f"postgresql.ARRAY({sa_type})" if column.is_array else sa_type


def _known(type_text: str) -> tuple[str, str] | None:
    if type_text in _SIMPLE:
        return _SIMPLE[type_text]
    for pattern, template, python in _SIZED:
        match = pattern.fullmatch(type_text)
        if match:
            return template.format(*match.groups()), python
    return None


def _python_type(column: Column, names: _Names) -> str:
    element = column.type[:-2] if column.is_array and column.type.endswith("[]") else column.type
    known = _known(element)
    python = "str" if column.is_enum or known is None else known[1]
    if column.is_array:
        python = f"list[{python}]"
    return python if column.not_null else f"{python} | None"


def _relationships(table: Table, found: Catalog, names: _Names) -> list[str]:
    """Both ends of every foreign key: the referencing side here, the referenced side on its table."""
    lines: list[str] = []
    me = (table.schema, table.name)
    cls = names.classes[me]
    for fk in table.foreign_keys:  # this table references another (many-to-one, or one-to-one)
        parent = names.classes.get((fk.ref_schema, fk.ref_table))
        if parent is None:
            continue
        optional = any(not c.not_null for c in table.columns if c.name in fk.columns)
        options = [f"back_populates={names.to_many[(*me, fk.name)]!r}", f"foreign_keys={_fk_cols(cls, fk, table)}"]
        if (fk.ref_schema, fk.ref_table) == me:
            ref_attrs = ", ".join(f"{cls}.{_attribute_of(table, c)}" for c in fk.ref_columns)
            options.append(f"remote_side=\"[{ref_attrs}]\"")
        annotation = f"{parent} | None" if optional else parent
        lines.append(f"    {names.to_one[(*me, fk.name)]}: Mapped[{annotation}] = relationship({', '.join(options)})")
    for other in found.tables:  # other tables reference this one (one-to-many, or one-to-one)
        for fk in other.foreign_keys:
            if (fk.ref_schema, fk.ref_table) != me:
                continue
            child = names.classes[(other.schema, other.name)]
            key = (other.schema, other.name, fk.name)
            options = [f"back_populates={names.to_one[key]!r}", f"foreign_keys={_fk_cols(child, fk, other)}"]
            if _one_to_one(fk, other):
                options.append("uselist=False")
                annotation = f"{child} | None"
            else:
                annotation = f"list[{child}]"
            lines.append(f"    {names.to_many[key]}: Mapped[{annotation}] = relationship({', '.join(options)})")
    return lines


def _fk_cols(cls: str, fk: catalog.ForeignKey, table: Table) -> str:
    return '"[' + ", ".join(f"{cls}.{_attribute_of(table, c)}" for c in fk.columns) + ']"'


def _attribute_of(table: Table, column: str) -> str:
    return _column_attributes(table).get(column, column)


def _column_attributes(table: Table) -> dict[str, str]:
    """Column name -> its attribute on the class (a valid, unreserved Python name, unique)."""
    taken: set[str] = set()
    return {c.name: _attribute(c.name, taken) for c in table.columns}


def _one_to_one(fk: catalog.ForeignKey, table: Table) -> bool:
    keys = {table.primary_key, *(columns for _, columns in table.uniques)}
    return tuple(fk.columns) in keys or tuple(sorted(fk.columns)) in {tuple(sorted(k)) for k in keys}


def _to_one_name(fk: catalog.ForeignKey) -> str:
    if len(fk.columns) == 1 and fk.columns[0].endswith("_id") and len(fk.columns[0]) > 3:
        return fk.columns[0][:-3]
    return _singular(fk.ref_table)


def _to_many_name(fk: catalog.ForeignKey, table: Table) -> str:
    same_target = [f for f in table.foreign_keys if (f.ref_schema, f.ref_table) == (fk.ref_schema, fk.ref_table)]
    base = _singular(table.name) if _one_to_one(fk, table) else table.name
    if len(same_target) > 1 or (table.schema, table.name) == (fk.ref_schema, fk.ref_table):
        base = f"{base}_by_{'_'.join(fk.columns)}"
    return _identifier(base)


def _attribute(name: str, taken: set[str]) -> str:
    attr = _identifier(name)
    if keyword.iskeyword(attr) or attr in _RESERVED or attr.startswith("_"):
        attr = f"{attr.lstrip('_') or 'column'}_"
    while attr in taken:
        attr += "_"
    taken.add(attr)
    return attr


def _identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name)
    return f"_{text}" if text[:1].isdigit() else text


def _singular(name: str) -> str:
    for plural, single in (("ies", "y"), ("sses", "ss"), ("shes", "sh"), ("ches", "ch"), ("xes", "x")):
        if name.endswith(plural):
            return name[: -len(plural)] + single
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", name) if part) or "Table"
