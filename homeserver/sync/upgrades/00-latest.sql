-- v0 -> v1: sync filters and read receipts
CREATE TABLE sync_filters (
	user_id   TEXT   NOT NULL,
	filter_id BIGINT NOT NULL,
	filter    TEXT   NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE sync_receipts (
	room_id      TEXT   NOT NULL,
	user_id      TEXT   NOT NULL,
	receipt_type TEXT   NOT NULL,
	thread_id    TEXT   NOT NULL DEFAULT '',
	event_id     TEXT   NOT NULL,
	ts           BIGINT NOT NULL,
	pos          BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX sync_receipts_room_pos_idx ON sync_receipts (room_id, pos);
CREATE INDEX sync_receipts_pos_idx ON sync_receipts (pos);
