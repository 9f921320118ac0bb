-- v1 -> v2: relations index and message search index
-- rooms_relations has one row per event that carries content["m.relates_to"] with a rel_type and an event_id,
-- written in the transaction that persists the event and removed when the event is redacted.
CREATE TABLE rooms_relations (
	event_id         TEXT   PRIMARY KEY REFERENCES rooms_events (event_id) ON DELETE CASCADE,
	room_id          TEXT   NOT NULL,
	relates_to       TEXT   NOT NULL,
	rel_type         TEXT   NOT NULL,
	type             TEXT   NOT NULL,
	sender           TEXT   NOT NULL,
	stream_pos       BIGINT NOT NULL,
	origin_server_ts BIGINT NOT NULL
);
CREATE INDEX rooms_relations_target_idx ON rooms_relations (room_id, relates_to, rel_type, stream_pos);
CREATE INDEX rooms_relations_type_idx ON rooms_relations (room_id, rel_type, stream_pos);

-- rooms_search holds the lower-cased content.body of every m.room.message, for server-side search.
CREATE TABLE rooms_search (
	stream_pos BIGINT PRIMARY KEY REFERENCES rooms_events (stream_pos) ON DELETE CASCADE,
	room_id    TEXT   NOT NULL,
	body       TEXT   NOT NULL
);
CREATE INDEX rooms_search_room_idx ON rooms_search (room_id, stream_pos);

-- Index the events stored before this version.
-- only: sqlite until "end only"
INSERT INTO rooms_relations (event_id, room_id, relates_to, rel_type, type, sender, stream_pos, origin_server_ts)
SELECT event_id, room_id, json_extract(pdu, '$.content."m.relates_to".event_id'),
	json_extract(pdu, '$.content."m.relates_to".rel_type'), type, sender, stream_pos, origin_server_ts
FROM rooms_events
WHERE redacted_by = '' AND json_valid(pdu)
	AND json_type(pdu, '$.content."m.relates_to".event_id') = 'text'
	AND json_type(pdu, '$.content."m.relates_to".rel_type') = 'text';
INSERT INTO rooms_search (stream_pos, room_id, body)
SELECT stream_pos, room_id, lower(json_extract(pdu, '$.content.body'))
FROM rooms_events
WHERE redacted_by = '' AND type = 'm.room.message' AND state_key IS NULL AND json_valid(pdu)
	AND json_type(pdu, '$.content.body') = 'text';
-- end only sqlite
-- only: postgres until "end only"
INSERT INTO rooms_relations (event_id, room_id, relates_to, rel_type, type, sender, stream_pos, origin_server_ts)
SELECT event_id, room_id, pdu::jsonb -> 'content' -> 'm.relates_to' ->> 'event_id',
	pdu::jsonb -> 'content' -> 'm.relates_to' ->> 'rel_type', type, sender, stream_pos, origin_server_ts
FROM rooms_events
WHERE redacted_by = ''
	AND jsonb_typeof(pdu::jsonb -> 'content' -> 'm.relates_to' -> 'event_id') = 'string'
	AND jsonb_typeof(pdu::jsonb -> 'content' -> 'm.relates_to' -> 'rel_type') = 'string';
INSERT INTO rooms_search (stream_pos, room_id, body)
SELECT stream_pos, room_id, lower(pdu::jsonb -> 'content' ->> 'body')
FROM rooms_events
WHERE redacted_by = '' AND type = 'm.room.message' AND state_key IS NULL
	AND jsonb_typeof(pdu::jsonb -> 'content' -> 'body') = 'string';
-- end only postgres
