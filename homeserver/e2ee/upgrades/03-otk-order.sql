-- v2 -> v3: one-time keys remember when they were uploaded, so that claims hand out the oldest key first
ALTER TABLE e2ee_one_time_keys ADD COLUMN uploaded_at BIGINT NOT NULL DEFAULT 0;
