-- v0 -> v1: pushers (POST /pushers/set), one row per user, app and push key
CREATE TABLE pushers (
	user_id    TEXT   NOT NULL,
	app_id     TEXT   NOT NULL,
	pushkey    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	pusher     TEXT   NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_key_idx ON pushers (app_id, pushkey);
