"""Migration sets the checks' tests share: a good set (users, posts, tracking) and ways to break it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_migration

USERS = "CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE);"


USERS_DOWN = "DROP TABLE users;"


POSTS = ("CREATE TABLE posts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
         "    user_id bigint NOT NULL REFERENCES users (id),\n    title text NOT NULL);\n"
         "CREATE INDEX posts_user_id_idx ON posts (user_id);\n")


POSTS_DOWN = "DROP TABLE posts;"


TRACKING = "ALTER TABLE users ADD COLUMN last_seen_at timestamptz;\nALTER TABLE users ADD COLUMN visits integer;\n"


TRACKING_DOWN = "ALTER TABLE users DROP COLUMN visits;\nALTER TABLE users DROP COLUMN last_seen_at;\n"


def good(folder: Path) -> None:
    write_migration(folder, "20250101000000_users", USERS, USERS_DOWN)
    write_migration(folder, "20250102000000_posts", POSTS, POSTS_DOWN)
    write_migration(folder, "20250103000000_tracking", TRACKING, TRACKING_DOWN)


def rollback_leaves_column(folder: Path) -> None:
    good(folder)
    write_migration(folder, "20250103000000_tracking", TRACKING, "ALTER TABLE users DROP COLUMN last_seen_at;\n")

