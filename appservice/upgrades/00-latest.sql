-- v0 -> v1: per-appservice stream position and the pending transaction
CREATE TABLE appservice_stream (
	as_id      TEXT   PRIMARY KEY,
	-- stream_pos is the last homeserver stream position the appservice has acknowledged (or that held
	-- nothing for it).
	stream_pos BIGINT NOT NULL,
	-- next_txn is the number the next new transaction gets; never reused, so the appservice's de-duplication
	-- by transaction ID stays correct across restarts.
	next_txn   BIGINT NOT NULL DEFAULT 1
);

-- At most one transaction per appservice is in flight. It is written before it is sent and deleted in the
-- same database transaction that advances stream_pos, so a crash resends exactly the same txn ID and body.
CREATE TABLE appservice_txn (
	as_id  TEXT   PRIMARY KEY REFERENCES appservice_stream (as_id) ON DELETE CASCADE,
	txn_id BIGINT NOT NULL,
	up_to  BIGINT NOT NULL,
	events INTEGER NOT NULL,
	body   TEXT   NOT NULL
);
