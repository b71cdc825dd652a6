"""A Prisma project's migrations folder, applied the way Prisma applies it: each ``migration.sql`` by
``psql``, then a ``_prisma_migrations`` row as ``prisma migrate deploy`` writes it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

from pgshift.databases import pgbin
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl

PRISMA_TABLE_DDL = """CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT "_prisma_migrations_pkey" PRIMARY KEY ("id")
);
"""

STEPS = [
    ("init", '-- CreateEnum\nCREATE TYPE "Role" AS ENUM (\'USER\', \'ADMIN\');\n\n-- CreateTable\n'
             'CREATE TABLE "User" (\n    "id" SERIAL NOT NULL,\n    "email" TEXT NOT NULL,\n    "name" TEXT,\n'
             '    "role" "Role" NOT NULL DEFAULT \'USER\',\n\n    CONSTRAINT "User_pkey" PRIMARY KEY ("id")\n);\n\n'
             '-- CreateIndex\nCREATE UNIQUE INDEX "User_email_key" ON "User"("email");\n'),
    ("add_post", 'CREATE TABLE "Post" (\n    "id" SERIAL NOT NULL,\n    "title" VARCHAR(200) NOT NULL,\n'
                 '    "authorId" INTEGER NOT NULL,\n    CONSTRAINT "Post_pkey" PRIMARY KEY ("id")\n);\n'),
    ("post_author_fk", 'ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") '
                       'REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE;\n'),
    ("post_body", 'ALTER TABLE "Post" ADD COLUMN "body" TEXT;\n'),
    ("post_published", 'ALTER TABLE "Post" ADD COLUMN "published" BOOLEAN NOT NULL DEFAULT false;\n'),
    ("seed_admin", 'INSERT INTO "User" ("email", "name", "role") VALUES (\'admin@example.com\', \'Admin\', '
                   '\'ADMIN\');\n'),
    ("post_author_index", 'CREATE INDEX "Post_authorId_idx" ON "Post"("authorId");\n'),
    ("add_tag", 'CREATE TABLE "Tag" (\n    "id" SERIAL NOT NULL,\n    "label" TEXT NOT NULL,\n'
                '    CONSTRAINT "Tag_pkey" PRIMARY KEY ("id")\n);\n\n'
                'CREATE UNIQUE INDEX "Tag_label_key" ON "Tag"("label");\n'),
    ("post_tags", 'CREATE TABLE "_PostToTag" (\n    "A" INTEGER NOT NULL,\n    "B" INTEGER NOT NULL\n);\n\n'
                  'CREATE UNIQUE INDEX "_PostToTag_AB_unique" ON "_PostToTag"("A", "B");\n'
                  'CREATE INDEX "_PostToTag_B_index" ON "_PostToTag"("B");\n'),
    ("post_tags_fk", 'ALTER TABLE "_PostToTag" ADD CONSTRAINT "_PostToTag_A_fkey" FOREIGN KEY ("A") REFERENCES '
                     '"Post"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n'),
    ("user_created_at", 'ALTER TABLE "User" ADD COLUMN "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;\n'),
    ("role_moderator", 'ALTER TYPE "Role" ADD VALUE \'MODERATOR\';\n'),
    ("add_profile", 'CREATE TABLE "Profile" (\n    "id" SERIAL NOT NULL,\n    "bio" TEXT,\n'
                    '    "userId" INTEGER NOT NULL,\n    CONSTRAINT "Profile_pkey" PRIMARY KEY ("id")\n);\n'
                    'CREATE UNIQUE INDEX "Profile_userId_key" ON "Profile"("userId");\n'),
    ("profile_fk", 'ALTER TABLE "Profile" ADD CONSTRAINT "Profile_userId_fkey" FOREIGN KEY ("userId") REFERENCES '
                   '"User"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n'),
    ("post_title_longer", 'ALTER TABLE "Post" ALTER COLUMN "title" TYPE VARCHAR(300);\n'),
    ("drop_user_name", '-- AlterTable\nALTER TABLE "User" DROP COLUMN "name",\nADD COLUMN "displayName" TEXT;\n'),
    ("add_comment", 'CREATE TABLE "Comment" (\n    "id" BIGSERIAL NOT NULL,\n    "postId" INTEGER NOT NULL,\n'
                    '    "text" TEXT NOT NULL,\n    CONSTRAINT "Comment_pkey" PRIMARY KEY ("id"),\n'
                    '    CONSTRAINT "Comment_postId_fkey" FOREIGN KEY ("postId") REFERENCES "Post"("id")\n);\n'),
    ("comment_check", 'ALTER TABLE "Comment" ADD CONSTRAINT "Comment_text_check" CHECK (length("text") > 0);\n'),
    ("post_views", 'ALTER TABLE "Post" ADD COLUMN "views" INTEGER NOT NULL DEFAULT 0;\r\n'
                   'CREATE INDEX "Post_published_idx" ON "Post"("published") WHERE "published";\r\n'),
    ("published_posts_view", 'CREATE VIEW "PublishedPost" AS SELECT "id", "title" FROM "Post" WHERE "published";\n'),
]


def folder_name(n: int, name: str) -> str:
    return f"2024{1 + n // 28:02d}{1 + n % 28:02d}120000_{name}"


def write_folder(root: Path, steps: list[tuple[str, str]] = STEPS) -> Path:
    """``root/prisma/migrations`` with one folder per step, and Prisma's lock file."""
    folder = root / "prisma" / "migrations"
    folder.mkdir(parents=True)
    (folder / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for n, (name, sql) in enumerate(steps):
        step = folder / folder_name(n, name)
        step.mkdir()
        (step / "migration.sql").write_bytes(sql.encode())
    return folder


def psql(url: DatabaseUrl, path: Path) -> None:
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    where = [*(["-h", url.host] if url.host else []), *(["-p", str(url.port)] if url.port else []),
             *(["-U", url.user] if url.user else [])]
    subprocess.run([str(pgbin.program("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", *where, "-d", url.dbname,
                    "-f", str(path)], check=True, capture_output=True, env=env)


def deploy(url: DatabaseUrl, folder: Path, *, failed: str | None = None, rolled_back: str | None = None) -> None:
    """What ``prisma migrate deploy`` does: each pending folder's migration.sql, then its row.

    ``failed`` names a folder whose row is left unfinished (Prisma's record of a failed migration, its
    SQL not run); ``rolled_back`` one marked rolled back (``prisma migrate resolve --rolled-back``)."""
    with Database.connect(url) as db:
        db.execute(PRISMA_TABLE_DDL)
        for step in sorted(p for p in folder.iterdir() if p.is_dir()):
            sql = step / "migration.sql"
            checksum = hashlib.sha256(sql.read_bytes()).hexdigest()
            ident = str(uuid.uuid4())
            db.rows('INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, '
                    "applied_steps_count) VALUES (%s, %s, %s, now(), 0)", [ident, checksum, step.name])
            if step.name == failed:
                db.rows('UPDATE "_prisma_migrations" SET logs = %s WHERE id = %s',
                        ["Database error code: 42P01\nrelation does not exist", ident])
                return
            psql(url, sql)
            db.rows('UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = %s',
                    [ident])
            if step.name == rolled_back:
                db.rows('UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE id = %s', [ident])
