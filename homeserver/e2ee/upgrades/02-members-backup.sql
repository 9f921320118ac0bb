-- v1 -> v2: membership changes for device lists, server-side key backup
-- Joins and leaves (changes of "joined or not") at an e2ee stream position: who starts or stops sharing a room
-- with whom, for device_lists.changed / left.
CREATE TABLE e2ee_member_changes (
	pos     BIGINT  NOT NULL,
	room_id TEXT    NOT NULL,
	user_id TEXT    NOT NULL,
	joined  BOOLEAN NOT NULL,
	PRIMARY KEY (pos, room_id, user_id)
);

-- Key backup versions (/room_keys/version). Versions are per-user increasing numbers; a deleted version keeps
-- its row so that its number is never handed out again.
CREATE TABLE e2ee_backup_versions (
	user_id   TEXT    NOT NULL,
	version   BIGINT  NOT NULL,
	algorithm TEXT    NOT NULL,
	auth_data TEXT    NOT NULL,
	etag      BIGINT  NOT NULL DEFAULT 0,
	deleted   BOOLEAN NOT NULL DEFAULT false,
	PRIMARY KEY (user_id, version)
);

-- Backed-up room keys of a backup version.
CREATE TABLE e2ee_backup_keys (
	user_id             TEXT    NOT NULL,
	version             BIGINT  NOT NULL,
	room_id             TEXT    NOT NULL,
	session_id          TEXT    NOT NULL,
	first_message_index BIGINT  NOT NULL,
	forwarded_count     BIGINT  NOT NULL,
	is_verified         BOOLEAN NOT NULL,
	session_data        TEXT    NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
);
