"""dev.reset: rebuilds a development database from the migrations and the seed; refuses anything else
before touching it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import Aborted, Refused
from pgshift.migrations import apply
from pgshift.schema import reset
from tests.commands import ROOT, cli_env, inv_here


def count(url: DatabaseUrl, sql: str) -> int:
    with Database.connect(url) as db:
        row = db.one(sql)
    return int(row[0]) if row else -1


def junk(url: DatabaseUrl) -> None:
    with Database.connect(url) as db:
        db.execute("CREATE TABLE made_by_hand (id int); INSERT INTO made_by_hand VALUES (1)")


def never(_question: str) -> bool:
    raise AssertionError("asked for a confirmation it should not have needed")


@pytest.fixture
def shipped(make_settings: Any, db_url: DatabaseUrl) -> Any:
    """Settings whose migrations folder holds the shipped migrations and seed."""
    settings = make_settings(db_url)
    for path in (ROOT / "migrations").glob("*.sql"):
        shutil.copy(path, settings.migrations_dir / path.name)
    return settings


def test_reset_rebuilds_applies_everything_and_seeds(shipped: Any, db_url: DatabaseUrl) -> None:
    junk(db_url)
    asked: list[str] = []
    result = reset.reset(shipped, lambda q: asked.append(q.text) or True, apply.Limits.of(shipped))
    assert asked and db_url.dbname in asked[0]
    assert len(result.applied.applied) == 3 and result.seed is not None and result.seed.name == "seed.sql"
    assert count(db_url, "SELECT count(*) FROM pg_tables WHERE tablename = 'made_by_hand'") == 0
    assert count(db_url, "SELECT count(*) FROM users") == 3
    assert count(db_url, "SELECT count(*) FROM api_keys JOIN users ON users.id = api_keys.user_id") == 1
    assert api.status(shipped).exit_code == 0


def test_reset_refuses_a_non_development_target_and_touches_nothing(shipped: Any, db_url: DatabaseUrl) -> None:
    junk(db_url)
    with pytest.raises(Refused, match=r"development only \(ENVIRONMENT=staging\); nothing was touched"):
        reset.reset(replace(shipped, environment="staging"), never, apply.Limits.of(shipped))
    remote = replace(shipped, url=DatabaseUrl(host="db.example.com", port=5432, dbname="app", user="app"))
    with pytest.raises(Refused, match=r"points at db\.example\.com; nothing was touched"):
        reset.reset(remote, never, apply.Limits.of(shipped))
    with pytest.raises(Refused, match="will not drop the postgres database"):
        reset.reset(replace(shipped, url=db_url.with_dbname("postgres")), never, apply.Limits.of(shipped))
    with pytest.raises(Aborted):
        reset.reset(shipped, lambda _q: False, apply.Limits.of(shipped))
    assert count(db_url, "SELECT count(*) FROM made_by_hand") == 1


def test_reset_cli_refuses_staging_and_a_missing_yes_without_a_terminal(task_db_url: DatabaseUrl) -> None:
    db_url = task_db_url
    junk(db_url)
    staging = inv_here("dev.reset", "--yes", env=cli_env(db_url, ENVIRONMENT="staging"))
    assert staging.returncode == 2
    assert staging.stderr.startswith("error: ") and "development" in staging.stderr
    unasked = inv_here("dev.reset", env=cli_env(db_url))
    assert unasked.returncode == 2 and "--yes" in unasked.stderr
    assert "Traceback" not in staging.stderr + unasked.stderr
    assert count(db_url, "SELECT count(*) FROM made_by_hand") == 1


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_python_seed_runs_and_a_broken_sql_seed_names_its_line(make_settings: Any, db_url: DatabaseUrl) -> None:
    settings = make_settings(db_url)
    folder = settings.migrations_dir
    (folder / "20250101000000_t.sql").write_text("CREATE TABLE t (id int PRIMARY KEY, note text);\n")
    (folder / "seed.py").write_text("def seed(db):\n    db.execute(\"INSERT INTO t VALUES (1, 'from python')\")\n")
    result = reset.reset(settings, lambda _q: True, apply.Limits.of(settings))
    assert result.seed is not None and result.seed.name == "seed.py"
    assert count(db_url, "SELECT count(*) FROM t WHERE note = 'from python'") == 1
    (folder / "seed.py").unlink()
    (folder / "seed.sql").write_text("INSERT INTO t VALUES (1, 'a');\n\nINSERT INTO nope VALUES (2);\n")
    with pytest.raises(Exception, match=r"seed\.sql, line 3: relation \"nope\" does not exist; the database is "
                                        r"migrated but not seeded"):
        reset.reset(settings, lambda _q: True, apply.Limits.of(settings))
    assert count(db_url, "SELECT count(*) FROM t") == 0  # the seed ran in one transaction
