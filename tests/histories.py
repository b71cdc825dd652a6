"""Migration histories written the way real teams write them, generated to any length.

``write(folder)`` writes ~300 migrations in the styles seen in real projects: comment-only
placeholders, lower-case SQL, schemas other than public, ``IF NOT EXISTS`` everywhere, up-only
files with no rollback, the MySQL habits PostgreSQL still accepts (``SET NAMES``, ``USING BTREE``,
``varchar(255)``, ``double precision``, ``default current_timestamp``), ``set search_path`` and
unqualified names, standalone unique indexes
(multi-column, partial, expression), enums extended with ``ADD VALUE`` and used by a later
migration, views, functions and triggers, self-referencing foreign keys, renames and drops. Every
file applies on PostgreSQL 15 and 18; every rollback file written undoes its migration exactly.

``write_mysql(folder)`` has the MySQL habits PostgreSQL rejects (backticks, ``AUTO_INCREMENT``,
``ENGINE=InnoDB``, ``unsigned``) and a transaction the file opens itself (``START TRANSACTION``):
those must be reported, never crash a command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

SCHEMAS = ("public", "billing", "crm", "auth")
_START = datetime(2019, 3, 1, 9, 0, 0)


@dataclass
class History:
    """Migrations in the making: each ``add`` is the next file, an hour after the previous one."""

    folder: Path
    forward_only_header: bool = False   # up-only files say so with "-- forward_only: true"
    ids: list[str] = field(default_factory=list)
    up_only: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)

    def add(self, name: str, sql: str, rollback: str | None) -> str:
        ident = f"{(_START + timedelta(hours=len(self.ids))).strftime('%Y%m%d%H%M%S')}_{name}"
        if rollback is None and self.forward_only_header and sql.strip():
            sql = "-- forward_only: true\n" + sql
        (self.folder / f"{ident}.sql").write_text(sql)
        if rollback is not None:
            (self.folder / f"{ident}.rollback.sql").write_text(rollback)
        elif sql.strip() and not all(line.startswith("--") for line in sql.strip().splitlines()):
            self.up_only.append(ident)
        self.ids.append(ident)
        return ident


def _feature(h: History, k: int) -> None:
    """One feature of the application: a table and what a team does to it over the months (15 files)."""
    s = SCHEMAS[k % len(SCHEMAS)]
    t = f"items_{k}"
    q = f"{s}.{t}"
    h.add(f"create_{t}", f"""-- {t}: the main table of feature {k}
create table if not exists {q} (
    id bigserial primary key,
    name varchar(255) not null,
    email character varying(255),
    code varchar(32) not null,
    tenant_id integer not null default 0,
    parent_id bigint references {q} (id) on delete set null,
    score double precision default 0 not null,
    created_at timestamp default current_timestamp not null,
    deleted_at timestamp
);
""", f"drop table if exists {q};\n")
    h.add(f"{t}_parent_index", f"create index if not exists {t}_parent_idx on {q} using btree (parent_id) "
          "where parent_id is not null;\n", f"drop index if exists {s}.{t}_parent_idx;\n")
    h.add(f"{t}_unique_keys", f"""create unique index if not exists {t}_tenant_code_key on {q} (tenant_id, code);
create unique index if not exists {t}_email_key on {q} (lower(email));
create unique index if not exists {t}_live_name_key on {q} (name) where deleted_at is null;
""", f"""drop index if exists {s}.{t}_live_name_key;
drop index if exists {s}.{t}_email_key;
drop index if exists {s}.{t}_tenant_code_key;
""")
    h.placeholders.append(h.add(f"{t}_placeholder", "-- nothing here yet: kept so the numbering matches "
                                "the release notes\n", "-- nothing to undo\n"))
    h.add(f"{t}_state_type", f"""create type {s}.{t}_state as enum ('new', 'open');
alter table {q} add column if not exists state {s}.{t}_state not null default 'new';
""", f"alter table {q} drop column if exists state;\ndrop type if exists {s}.{t}_state;\n")
    h.add(f"{t}_state_closed", f"alter type {s}.{t}_state add value if not exists 'closed';\n", None)
    h.add(f"{t}_close_deleted", f"""update {q} set state = 'closed' where deleted_at is not null;
alter table {q} alter column state set default 'closed';
create index if not exists {t}_closed_idx on {q} (created_at) where state = 'closed';
""", f"drop index if exists {s}.{t}_closed_idx;\nalter table {q} alter column state set default 'new';\n")
    h.add(f"{t}_active_view", f"create or replace view {s}.active_{t} as\n    select id, name, code from {q} "
          "where deleted_at is null;\n", f"drop view if exists {s}.active_{t};\n")
    h.add(f"{t}_touch_trigger", f"""alter table {q} add column if not exists updated_at timestamp;
create or replace function {s}.touch_{t}() returns trigger language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;
create trigger touch_{t} before update on {q} for each row execute function {s}.touch_{t}();
""", f"""drop trigger if exists touch_{t} on {q};
drop function if exists {s}.touch_{t}();
alter table {q} drop column if exists updated_at;
""")
    h.add(f"{t}_notes", f"""create table if not exists {s}.{t}_notes (
    id serial primary key,
    item_id bigint not null references {q} (id) on delete cascade,
    reviewer_id bigint references {q} (id),
    body text,
    position smallint not null default 0,
    is_primary boolean not null default false
);
create unique index if not exists {t}_notes_one_primary on {s}.{t}_notes (item_id) where is_primary;
create index if not exists {t}_notes_item_idx on {s}.{t}_notes (item_id, position);
create index if not exists {t}_notes_reviewer_idx on {s}.{t}_notes (reviewer_id) where reviewer_id is not null;
""", f"drop table if exists {s}.{t}_notes;\n")
    seed = f"""set names 'UTF8';
insert into {q} (name, email, code) values ('first', 'first@example.test', 'A1');
insert into {q} (name, email, code, parent_id) select 'second', null, 'A2', id from {q} where code = 'A1';
"""
    if k % 2 == 0:  # some tables have seed rows (data generation keeps them), the others none
        h.add(f"{t}_seed", seed, f"delete from {q} where code in ('A2', 'A1');\n")
    else:
        h.add(f"{t}_defaults", "set names 'UTF8';\n" f"alter table {q} alter column code set default 'x';\n",
              f"alter table {q} alter column code drop default;\n")
    h.add(f"{t}_comment", f"set search_path to {s}, public;\ncomment on table {t} is 'feature {k}';\n",
          f"set search_path to {s}, public;\ncomment on table {t} is null;\n")
    h.add(f"{t}_rename_name", f"alter table {q} rename column name to title;\n",
          f"alter table {q} rename column title to name;\n")
    h.add(f"{t}_drop_score", f"alter table {q} drop column if exists score;\n",
          f"alter table {q} add column score double precision default 0 not null;\n")
    h.add(f"{t}_archive", f"""create table if not exists {s}.{t}_archive (like {q} including defaults);
alter table {s}.{t}_archive rename to {t}_old;
drop table if exists {s}.{t}_old;
""", "-- the archive table came and went in the same migration: nothing to undo\n")


def write(folder: Path, migrations: int = 300, forward_only_header: bool = False) -> History:
    """About ``migrations`` files (whole features of 15, after the schemas): see the module docstring."""
    h = History(folder, forward_only_header)
    h.add("init", "-- initial migration: the schema was created by hand before we used migrations\n", None)
    for s in SCHEMAS[1:]:
        h.add(f"schema_{s}", f"create schema if not exists {s};\n", f"drop schema if exists {s};\n")
    k = 0
    while len(h.ids) < migrations:
        _feature(h, k)
        k += 1
    return h


def write_mysql(folder: Path) -> History:
    """A short history with the MySQL habits PostgreSQL rejects, after two files that apply."""
    h = History(folder)
    h.add("users", "create table if not exists users (id serial primary key, email varchar(255) not null);\n",
          "drop table if exists users;\n")
    h.add("users_email_key", "create unique index if not exists users_email_key on users (email);\n",
          "drop index if exists users_email_key;\n")
    h.add("orders", """create table `orders` (
  `id` int(11) not null auto_increment,
  `user_id` int(11) not null,
  primary key (`id`),
  key `orders_user` (`user_id`)
) engine=InnoDB default charset=utf8mb4;
""", "drop table if exists orders;\n")
    h.add("backfill", "start transaction;\nupdate users set email = lower(email);\ncommit;\n", None)
    h.add("orders_total", "alter table orders add column total decimal(10,2) unsigned not null default 0;\n",
          None)
    return h
