-- Imaginarium: accounts, login sessions, API keys and per-user preferences.

CREATE EXTENSION IF NOT EXISTS citext;

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         citext NOT NULL UNIQUE,
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);

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

CREATE TABLE user_preferences (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    theme       text NOT NULL DEFAULT 'system' CHECK (theme IN ('light', 'dark', 'system')),
    locale      text NOT NULL DEFAULT 'en',
    timezone    text NOT NULL DEFAULT 'UTC',
    email_opt_in boolean NOT NULL DEFAULT true,
    settings    jsonb NOT NULL DEFAULT '{}'
);
