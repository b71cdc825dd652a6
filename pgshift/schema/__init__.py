"""Schema as code: the declared schema (``schema.sql``), generated migrations, drift, reset, models.

``diff`` is the only module that imports the differ library (``results``); ``orm`` is the only one
that imports SQLAlchemy. Both are imported by the workflows that need them, never by ``status``
unless drift is asked for.
"""

from __future__ import annotations

from pathlib import Path

from pgshift.settings import Settings

SCHEMA_FILE = "schema.sql"
MODELS_FILE = "models.py"


def declared_path(settings: Settings) -> Path:
    """``schema.sql`` lives beside the migrations folder (the repository root by default)."""
    return settings.migrations_dir.parent / SCHEMA_FILE


def models_path(settings: Settings) -> Path:
    """Where ``dev.generate`` writes the SQLAlchemy models by default (``dev.migrate`` refreshes it)."""
    return settings.migrations_dir.parent / MODELS_FILE
