-- The declared schema of Imaginarium: what the database should look like, in plain PostgreSQL DDL.
-- Edit it, then run `inv dev.migrate NAME`: the difference from the migrated database is written as
-- migrations/<timestamp>_NAME.sql with its .rollback.sql, and applied. The migrations stay the
-- history; this file is the present.

CREATE EXTENSION IF NOT EXISTS citext;

-- Accounts.
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         citext NOT NULL UNIQUE,
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    last_login_at timestamptz,
    login_count   integer NOT NULL DEFAULT 0
);

-- Login sessions; the partial index finds the live ones by expiry.
CREATE TABLE sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent  text,
    ip_address  inet,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at) WHERE revoked_at IS NULL;

-- API keys: only a hash of the key is kept; the prefix identifies a key in logs.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    prefix       char(8) NOT NULL UNIQUE,
    key_hash     text NOT NULL,
    scopes       text[] NOT NULL DEFAULT '{}',
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    UNIQUE (user_id, name)
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- One row of preferences per user.
CREATE TABLE user_preferences (
    user_id      bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    theme        text NOT NULL DEFAULT 'system' CHECK (theme IN ('light', 'dark', 'system')),
    locale       text NOT NULL DEFAULT 'en',
    timezone     text NOT NULL DEFAULT 'UTC',
    email_opt_in boolean NOT NULL DEFAULT true,
    settings     jsonb NOT NULL DEFAULT '{}'
);
