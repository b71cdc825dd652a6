-- api_keys.user_id has a foreign key but no index: deleting a user scanned the whole table.
-- Built without blocking writes, so this migration runs outside a transaction (detected automatically).

CREATE INDEX CONCURRENTLY api_keys_user_id_idx ON api_keys (user_id);
