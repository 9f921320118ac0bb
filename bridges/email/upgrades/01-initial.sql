-- v0 -> v1: Mailbox sync positions and the base-subject index of threads
CREATE TABLE email_mailbox_state (
	login_id     TEXT   NOT NULL,
	mailbox      TEXT   NOT NULL,
	uid_validity BIGINT NOT NULL,
	last_uid     BIGINT NOT NULL,
	updated_at   BIGINT NOT NULL,
	PRIMARY KEY (login_id, mailbox)
);

CREATE TABLE email_thread_subject (
	login_id     TEXT   NOT NULL,
	base_subject TEXT   NOT NULL,
	portal_id    TEXT   NOT NULL,
	updated_at   BIGINT NOT NULL,
	PRIMARY KEY (login_id, base_subject)
);
