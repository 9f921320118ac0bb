-- v0 -> v1: rooms, events, current state, aliases, stream position
CREATE TABLE rooms_stream (
	id  INTEGER PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO rooms_stream (id, pos) VALUES (0, 0);

CREATE TABLE rooms_rooms (
	room_id     TEXT PRIMARY KEY,
	version     TEXT NOT NULL,
	creator     TEXT NOT NULL,
	visibility  TEXT NOT NULL DEFAULT 'private',
	-- the single forward extremity: single-server rooms have a linear history
	last_event  TEXT NOT NULL DEFAULT '',
	last_depth  BIGINT NOT NULL DEFAULT 0,
	created_ts  BIGINT NOT NULL
);

CREATE TABLE rooms_events (
	stream_pos       BIGINT PRIMARY KEY,
	event_id         TEXT NOT NULL UNIQUE,
	room_id          TEXT NOT NULL REFERENCES rooms_rooms (room_id) ON DELETE CASCADE,
	sender           TEXT NOT NULL,
	type             TEXT NOT NULL,
	state_key        TEXT,
	depth            BIGINT NOT NULL,
	origin_server_ts BIGINT NOT NULL,
	-- the PDU as hashed (federation format, redacted in place when redacted)
	pdu              TEXT NOT NULL,
	unsigned         TEXT NOT NULL DEFAULT '{}',
	redacted_by      TEXT NOT NULL DEFAULT '',
	txn_id           TEXT NOT NULL DEFAULT '',
	device_id        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX rooms_events_room_idx ON rooms_events (room_id, stream_pos);
CREATE INDEX rooms_events_state_idx ON rooms_events (room_id, type, state_key, stream_pos);
CREATE UNIQUE INDEX rooms_events_txn_idx ON rooms_events (sender, device_id, txn_id) WHERE txn_id <> '';

CREATE TABLE rooms_current_state (
	room_id    TEXT NOT NULL REFERENCES rooms_rooms (room_id) ON DELETE CASCADE,
	type       TEXT NOT NULL,
	state_key  TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	-- content.membership of m.room.member events, '' otherwise
	membership TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX rooms_current_state_member_idx ON rooms_current_state (state_key, membership) WHERE type = 'm.room.member';

CREATE TABLE rooms_aliases (
	alias      TEXT PRIMARY KEY,
	room_id    TEXT NOT NULL REFERENCES rooms_rooms (room_id) ON DELETE CASCADE,
	creator    TEXT NOT NULL
);
CREATE INDEX rooms_aliases_room_idx ON rooms_aliases (room_id);
