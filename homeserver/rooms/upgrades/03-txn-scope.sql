-- v2 -> v3: transaction IDs are scoped to the device and the request path, which names the room, so the same
-- transaction ID may be used again in another room.
DROP INDEX rooms_events_txn_idx;
CREATE UNIQUE INDEX rooms_events_txn_idx ON rooms_events (sender, device_id, room_id, txn_id) WHERE txn_id <> '';
