-- Track logins, so inactive accounts can be found, without a table rewrite.

ALTER TABLE users ADD COLUMN last_login_at timestamptz;
ALTER TABLE users ADD COLUMN login_count integer NOT NULL DEFAULT 0;
