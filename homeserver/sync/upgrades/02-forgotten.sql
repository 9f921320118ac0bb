-- v1 -> v2: forgotten rooms
-- A user forgets a room they are no longer in; the row names the membership event that was current then, so
-- the room counts as forgotten only while that event is still the user's membership (a new invite or join
-- brings the room back).
CREATE TABLE sync_forgotten (
	user_id         TEXT NOT NULL,
	room_id         TEXT NOT NULL,
	member_event_id TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);
