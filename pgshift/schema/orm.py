"""The one module that imports SQLAlchemy: loading a generated models module and creating its schema.

``load`` imports a models file by path and checks it holds a DeclarativeBase; ``describe`` turns its
metadata into plain data (tables, columns with their types as PostgreSQL spells them, keys, indexes)
for the generator to compare with the catalogs; ``create_all`` makes its tables in a database (after
the extensions it lists).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError


@dataclass(frozen=True)
class IndexShape:
    name: str
    unique: bool
    method: str
    elements: tuple[str, ...]  # column names, or expressions as written
    include: tuple[str, ...]
    where: str | None


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str       # as PostgreSQL's format_type spells it, for the types the generator knows
    enum: tuple[str | None, str] | None  # (schema, name) of an enum type (element type of an array)
    is_array: bool
    nullable: bool


@dataclass(frozen=True)
class TableShape:
    schema: str
    name: str
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[IndexShape, ...]


def load(path: Path, label: str | None = None) -> ModuleType:
    """Import the models module at ``path`` (any file name: a temporary file is checked before it is
    renamed into place); a failure is one line naming the file (``label``, or the path's name) and the error."""
    label = label or path.name
    name = f"pgshift_models_{uuid.uuid4().hex[:8]}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise MigrationError(f"{label} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclass-style annotations resolve through sys.modules
    try:
        spec.loader.exec_module(module)
        metadata = module.Base.metadata
        module.Base.registry.configure()  # relationships resolve now, not on first use
    except Exception as error:
        raise MigrationError(f"{label} does not import cleanly: {type(error).__name__}: {error}") from None
    finally:
        sys.modules.pop(name, None)
    if not isinstance(metadata, sa.MetaData):
        raise MigrationError(f"{label} has no DeclarativeBase named Base")
    return module


def describe(module: ModuleType) -> list[TableShape]:
    """The tables of the module's metadata as plain data, to compare with what the database holds."""
    dialect: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    shapes = []
    for table in module.Base.metadata.tables.values():
        columns = tuple(_column(column, dialect) for column in table.columns)
        indexes = tuple(_index(index) for index in sorted(table.indexes, key=lambda i: str(i.name)))
        shapes.append(TableShape(table.schema or "public", table.name, columns,
                                 tuple(c.name for c in table.primary_key.columns), indexes))
    return shapes


def _column(column: sa.Column[Any], dialect: sa.Dialect) -> ColumnShape:
    kind = column.type
    is_array = isinstance(kind, sa.ARRAY)
    element = kind.item_type if isinstance(kind, sa.ARRAY) else kind
    enum = (element.schema, str(element.name)) if isinstance(element, sa.Enum) else None
    compiled = kind.compile(dialect=dialect)
    if not isinstance(element, sa.types.UserDefinedType):  # its DDL is already format_type's text
        compiled = _spelled(compiled)
    return ColumnShape(column.name, compiled, enum, is_array, bool(column.nullable))


def _spelled(compiled: str) -> str:
    """SQLAlchemy's DDL for a type, as format_type writes it: VARCHAR(80) -> character varying(80)."""
    text = compiled.lower().replace(", ", ",")
    text = re.sub(r"^varchar\b", "character varying", text)
    return re.sub(r"^char\b", "character", text)


def _index(index: sa.Index) -> IndexShape:
    options = index.dialect_options["postgresql"]
    elements = tuple(e.name if isinstance(e, sa.Column) else str(e) for e in index.expressions)
    where = options.get("where")
    return IndexShape(str(index.name), bool(index.unique), str(options.get("using") or "btree"), elements,
                      tuple(str(c) for c in options.get("include") or ()), None if where is None else str(where))


def table_count(module: ModuleType) -> int:
    return len(module.Base.metadata.tables)


def create_all(module: ModuleType, url: DatabaseUrl) -> None:
    """Create the schemas and extensions the module lists, then its tables, in the database at ``url``."""
    engine = sa.create_engine("postgresql+psycopg://", connect_args=_connect_args(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            for schema in getattr(module, "SCHEMAS", ()):
                connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            for extension in getattr(module, "EXTENSIONS", ()):
                connection.execute(sa.text(f'CREATE EXTENSION IF NOT EXISTS "{extension}"'))
            module.Base.metadata.create_all(connection)
    finally:
        engine.dispose()


def _connect_args(url: DatabaseUrl) -> dict[str, Any]:
    return dict(url.connect_kwargs())
