"""Migration sets that each break one thing: exactly that check fails, and it says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.dburl import DatabaseUrl
from tests.conftest import write_migration
from tests.sets import POSTS, POSTS_DOWN, TRACKING, TRACKING_DOWN, USERS, good, rollback_leaves_column


def rollback_missing(folder: Path) -> None:
    good(folder)
    (folder / "20250102000000_posts.rollback.sql").unlink()


def fails_halfway(folder: Path) -> None:
    good(folder)
    write_migration(folder, "20250103000000_tracking",
                    "ALTER TABLE users ADD COLUMN last_seen_at timestamptz;\n\n"
                    "CREATE VIEW busy AS SELECT visits FROM users;\n",
                    TRACKING_DOWN)


def unindexed_foreign_key(folder: Path) -> None:
    good(folder)
    write_migration(folder, "20250102000000_posts", POSTS.replace(
        "CREATE INDEX posts_user_id_idx ON posts (user_id);\n", ""), POSTS_DOWN)


def blocking_index(folder: Path) -> None:
    good(folder)
    write_migration(folder, "20250104000000_index_email", "-- find users by address\n\n"
                    "CREATE INDEX users_lower_email_idx ON users (lower(email));\n",
                    "DROP INDEX users_lower_email_idx;")


def _run(url: DatabaseUrl, settings: Any) -> dict[str, api.Report]:
    return dict(api.checks(settings))


def _failing(reports: dict[str, api.Report]) -> set[str]:
    return {name for name, report in reports.items() if not report.ok}


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_good_set_passes_every_check(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    good(migrations_dir)
    reports = _run(db_url, make_settings(db_url, quick_rows=500))
    assert _failing(reports) == set(), {n: r.summary() for n, r in reports.items()}
    assert reports["forward"].summary().startswith("3 migration(s) applied")
    assert reports["backward"].summary() == "3 migration(s) round-trip (up, down, up) exactly"
    perf = reports["performance"].as_json()
    assert perf["fill"]["rows"] > 0 and [m["id"] for m in perf["measured"]] == ["20250103000000_tracking"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_rollback_that_leaves_a_column_fails_backward_only(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    rollback_leaves_column(migrations_dir)
    reports = _run(db_url, make_settings(db_url, quick_rows=500))
    assert _failing(reports) == {"backward"}
    trips = {t["id"]: t for t in reports["backward"].as_json()["trips"]}
    broken = trips["20250103000000_tracking"]
    assert broken["state"] == "failed"
    assert "after the rollback the schema differs from before 20250103000000_tracking.sql" in broken["problem"]
    assert "+ column public.users.visits: integer" in broken["diff"]
    assert trips["20250102000000_posts"]["state"] == "ok" and trips["20250101000000_users"]["state"] == "ok"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_missing_rollback_file_fails_backward_only(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    rollback_missing(migrations_dir)
    reports = _run(db_url, make_settings(db_url, quick_rows=500))
    assert _failing(reports) == {"backward"}
    assert "20250102000000_posts.rollback.sql: no rollback file: write migrations/20250102000000_posts.rollback.sql" \
        in reports["backward"].summary()
    states = {t["id"]: t["state"] for t in reports["backward"].as_json()["trips"]}
    assert states == {"20250103000000_tracking": "ok", "20250102000000_posts": "failed", "20250101000000_users": "ok"}


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_migration_failing_halfway_fails_forward_only(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    fails_halfway(migrations_dir)
    reports = _run(db_url, make_settings(db_url, quick_rows=500))
    assert _failing(reports) == {"forward"}
    message = reports["forward"].summary()
    assert message.startswith("20250103000000_tracking.sql fails: 20250103000000_tracking.sql, line 3:")
    assert 'column "visits" does not exist' in message
    assert "CREATE VIEW busy AS SELECT visits FROM users" in message
    assert "and later are not tested" in (reports["backward"].as_json()["note"] or "")


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_unindexed_foreign_key_fails_constraints_only(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    unindexed_foreign_key(migrations_dir)
    reports = _run(db_url, make_settings(db_url, quick_rows=500))
    assert _failing(reports) == {"constraints"}
    findings = reports["constraints"].as_json()["findings"]
    assert [(f["kind"], f["table"]) for f in findings] == [("unindexed foreign key", "public.posts")]
    assert "posts_user_id_fkey (user_id)" in findings[0]["problem"]
    assert findings[0]["fix"] == "CREATE INDEX CONCURRENTLY posts_user_id_idx ON public.posts (user_id);"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_non_concurrent_index_on_a_table_made_earlier_in_the_run_is_clean(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    blocking_index(migrations_dir)  # the target is empty: users is created by the same pending run
    reports = _run(db_url, make_settings(db_url, quick_rows=2000))
    assert _failing(reports) == set()
    assert reports["lint"].as_json()["findings"] == []
    # performance measured the same index over data and found it within the limits at this size
    measured = reports["performance"].as_json()["measured"]
    assert [(m["id"], m["state"]) for m in measured] == [("20250104000000_index_email", "ok")]


@pytest.mark.parametrize("pg", ["pg15"])
def test_every_broken_rollback_is_found_in_one_run(
        pg: str, request: pytest.FixtureRequest, migrations_dir: Path, make_settings: Any) -> None:
    """After a failure the walk rebuilds and goes on, so two broken rollbacks are both reported."""
    admin: DatabaseUrl = request.getfixturevalue(pg)
    good(migrations_dir)
    write_migration(migrations_dir, "20250101000000_users", USERS, "SELECT 1;")
    write_migration(migrations_dir, "20250103000000_tracking", TRACKING,
                    "ALTER TABLE users DROP COLUMN visits;\nSELECT count(*) FROM user_visits;\n")
    report = api.backward(make_settings(admin.with_dbname("pgshift_no_such_db")))
    trips = {t.id: t for t in report.trips}
    assert {i: t.state for i, t in trips.items()} == {
        "20250103000000_tracking": "failed", "20250102000000_posts": "ok", "20250101000000_users": "failed"}
    assert trips["20250103000000_tracking"].problem is not None
    assert trips["20250103000000_tracking"].problem.startswith(
        'the rollback fails: 20250103000000_tracking.rollback.sql, line 2: relation "user_visits" does not exist')
    assert "+ table public.users: columns (email, id)" in trips["20250101000000_users"].diff
