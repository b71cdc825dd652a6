-- Rollback of 20250101000000_initial_schema.

DROP TABLE user_preferences;
DROP TABLE api_keys;
DROP TABLE sessions;
DROP TABLE users;
DROP EXTENSION IF EXISTS citext;
