"""What the deploy tests share: a small migration set, production settings with Slack, a deploy run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import workflow
from pgshift.deploy.notify import Slack
from pgshift.migrations import apply, source
from pgshift.settings import Settings
from tests.conftest import write_migration
from tests.slack import SlackStub

PASSWORD = "pw-Secret-4711"
M1, M2, BAD = "20250101000000_create_items", "20250102000000_add_price", "20250103000000_broken"


def write_set(folder: Path, broken: bool = False) -> None:
    write_migration(folder, M1, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');\n", "DROP TABLE items;\n")
    write_migration(folder, M2, "ALTER TABLE items ADD COLUMN price int;\n",
                    "ALTER TABLE items DROP COLUMN price;\n")
    if broken:
        write_migration(folder, BAD, "ALTER TABLE items ADD COLUMN note text;\nSELECT 1 / 0;\n",
                        "ALTER TABLE items DROP COLUMN note;\n")


def production(db_url: DatabaseUrl, make_settings: Any, stub: SlackStub, **overrides: Any) -> Settings:
    """Production settings, with a password in the URL (the servers trust us, so any password works)."""
    settings: Settings = make_settings(replace(db_url, password=PASSWORD), slack_webhook_url=stub.url,
                                       environment="production", **overrides)
    return settings


def apply_first(settings: Settings) -> None:
    """Production already has M1 (and its rows)."""
    migrations = source.read(settings.migrations_dir)
    assert settings.url is not None
    with Database.connect(settings.url) as db:
        apply.apply(db, migrations, apply.Limits.of(settings), upto=M1)


def run_deploy(settings: Settings, lines: list[str], **kw: Any) -> workflow.DeployReport:
    slack = Slack.from_settings(settings)
    try:
        return workflow.deploy(settings, notify=slack, progress=lines.append, confirm=lambda plan: True, **kw)
    finally:
        if slack is not None:
            slack.close()

