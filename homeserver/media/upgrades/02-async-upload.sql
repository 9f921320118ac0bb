-- v1 -> v2: media IDs reserved by POST /_matrix/media/v1/create, waiting for their content
CREATE TABLE media_pending (
	media_id   TEXT   NOT NULL PRIMARY KEY,
	uploader   TEXT   NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX media_pending_uploader_idx ON media_pending (uploader);
