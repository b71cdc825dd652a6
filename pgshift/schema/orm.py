"""The one module that imports SQLAlchemy: loading a generated models module and creating its schema.

``load`` imports a models file by path and checks it holds a DeclarativeBase; ``create_all`` makes
its tables in a database (after the extensions it lists), which is how a round trip is checked.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa

from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError


def load(path: Path) -> ModuleType:
    """Import the models module at ``path``; a failure is one line naming the file and the error."""
    name = f"pgshift_models_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclass-style annotations resolve through sys.modules
    try:
        spec.loader.exec_module(module)
        metadata = module.Base.metadata
        module.Base.registry.configure()  # relationships resolve now, not on first use
    except Exception as error:
        raise MigrationError(f"{path.name} does not import cleanly: {type(error).__name__}: {error}") from None
    finally:
        sys.modules.pop(name, None)
    if not isinstance(metadata, sa.MetaData):
        raise MigrationError(f"{path.name} has no DeclarativeBase named Base")
    return module


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
