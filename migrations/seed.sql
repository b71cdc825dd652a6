-- Development seed for Imaginarium: a few accounts to log in with and click around.
-- Run by `inv dev.reset` after every migration has been applied, in one transaction. It is not a
-- migration (it is never recorded), and never runs anywhere but a development database.
-- The password hashes are placeholders: no password matches them.

INSERT INTO users (email, display_name, password_hash, is_admin, last_login_at, login_count) VALUES
    ('ada@example.com',   'Ada Lovelace',   'dev-seed:not-a-real-hash', true,  now() - interval '1 hour', 42),
    ('grace@example.com', 'Grace Hopper',   'dev-seed:not-a-real-hash', false, now() - interval '2 days', 7),
    ('alan@example.com',  'Alan Turing',    'dev-seed:not-a-real-hash', false, NULL, 0);

INSERT INTO user_preferences (user_id, theme, locale, timezone, settings)
SELECT id, theme, locale, timezone, settings::jsonb
FROM users JOIN (VALUES
    ('ada@example.com',   'dark',   'en', 'Europe/London',    '{"beta": true}'),
    ('grace@example.com', 'light',  'en', 'America/New_York', '{}')
) AS p (email, theme, locale, timezone, settings) USING (email);

INSERT INTO sessions (user_id, user_agent, ip_address, expires_at)
SELECT id, 'Mozilla/5.0 (seed)', '127.0.0.1', now() + interval '30 days'
FROM users WHERE email = 'ada@example.com';

INSERT INTO api_keys (user_id, name, prefix, key_hash, scopes)
SELECT id, 'local scripts', 'devseed1', 'dev-seed:not-a-real-hash', '{read,write}'
FROM users WHERE email = 'ada@example.com';
