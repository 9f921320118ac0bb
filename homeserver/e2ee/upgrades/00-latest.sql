-- v0 -> v1: device keys, one-time and fallback keys, to-device messages, device list changes, cross-signing
CREATE TABLE e2ee_device_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

CREATE TABLE e2ee_one_time_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX e2ee_one_time_keys_alg_idx ON e2ee_one_time_keys (user_id, device_id, algorithm);

CREATE TABLE e2ee_fallback_keys (
	user_id   TEXT    NOT NULL,
	device_id TEXT    NOT NULL,
	algorithm TEXT    NOT NULL,
	key_id    TEXT    NOT NULL,
	key_json  TEXT    NOT NULL,
	used      BOOLEAN NOT NULL DEFAULT false,
	PRIMARY KEY (user_id, device_id, algorithm)
);

-- One row per message per target device; pos is the e2ee stream position of the send (unique per device).
CREATE TABLE e2ee_to_device (
	user_id    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	pos        BIGINT NOT NULL,
	sender     TEXT   NOT NULL,
	event_type TEXT   NOT NULL,
	content    TEXT   NOT NULL,
	PRIMARY KEY (user_id, device_id, pos)
);

-- Transaction IDs already handled, so that a retried PUT /sendToDevice is not delivered twice.
CREATE TABLE e2ee_to_device_txn (
	sender    TEXT   NOT NULL,
	device_id TEXT   NOT NULL,
	txn_id    TEXT   NOT NULL,
	ts        BIGINT NOT NULL,
	PRIMARY KEY (sender, device_id, txn_id)
);

-- The last e2ee stream position at which a user's devices or cross-signing keys changed.
CREATE TABLE e2ee_device_changes (
	user_id TEXT   NOT NULL PRIMARY KEY,
	pos     BIGINT NOT NULL
);
CREATE INDEX e2ee_device_changes_pos_idx ON e2ee_device_changes (pos);

CREATE TABLE e2ee_cross_signing_keys (
	user_id  TEXT NOT NULL,
	key_type TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload. target_key_id is a device ID for device keys and the
-- public key for a cross-signing key.
CREATE TABLE e2ee_signatures (
	target_user   TEXT NOT NULL,
	target_key_id TEXT NOT NULL,
	signer_user   TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature     TEXT NOT NULL,
	PRIMARY KEY (target_user, target_key_id, signer_user, signer_key_id)
);
