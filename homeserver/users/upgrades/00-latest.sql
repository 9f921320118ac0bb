-- v0 -> v1: accounts, devices and tokens, profiles, account data
CREATE TABLE users_accounts (
	user_id       TEXT PRIMARY KEY,
	-- bcrypt hash; '' means the account cannot log in with a password
	password_hash TEXT NOT NULL DEFAULT '',
	admin         BOOLEAN NOT NULL DEFAULT false,
	appservice_id TEXT NOT NULL DEFAULT '',
	displayname   TEXT NOT NULL DEFAULT '',
	avatar_url    TEXT NOT NULL DEFAULT '',
	deactivated   BOOLEAN NOT NULL DEFAULT false,
	created_ts    BIGINT NOT NULL
);

CREATE TABLE users_devices (
	user_id      TEXT NOT NULL REFERENCES users_accounts (user_id) ON DELETE CASCADE,
	device_id    TEXT NOT NULL,
	display_name TEXT NOT NULL DEFAULT '',
	-- SHA-256 of the access token, hex; the token itself is never stored
	token_hash   TEXT NOT NULL UNIQUE,
	created_ts   BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, device_id)
);

CREATE TABLE users_stream (
	id  INTEGER PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO users_stream (id, pos) VALUES (0, 0);

CREATE TABLE users_account_data (
	user_id    TEXT NOT NULL REFERENCES users_accounts (user_id) ON DELETE CASCADE,
	-- '' for global account data
	room_id    TEXT NOT NULL,
	type       TEXT NOT NULL,
	content    TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX users_account_data_pos_idx ON users_account_data (user_id, stream_pos);
