-- v0 -> v1: media metadata
CREATE TABLE media (
	media_id     TEXT   NOT NULL PRIMARY KEY,
	content_type TEXT   NOT NULL,
	filename     TEXT   NOT NULL,
	size         BIGINT NOT NULL,
	sha256       TEXT   NOT NULL,
	uploader     TEXT   NOT NULL,
	created_ts   BIGINT NOT NULL
);
