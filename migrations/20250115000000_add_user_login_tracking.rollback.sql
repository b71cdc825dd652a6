ALTER TABLE users DROP COLUMN login_count;
ALTER TABLE users DROP COLUMN last_login_at;
