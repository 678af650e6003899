-- File attachments on messages and thread activity tracking.

CREATE TABLE message_attachments (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id    uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    file_name     text        NOT NULL,
    content_type  text        NOT NULL,
    size_bytes    bigint      NOT NULL,
    storage_uri   text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT message_attachments_size_chk CHECK (size_bytes >= 0)
);

CREATE INDEX message_attachments_message_id_idx ON message_attachments (message_id);

COMMENT ON TABLE message_attachments IS 'Files referenced by a message; bytes live in object storage.';

ALTER TABLE threads ADD COLUMN last_message_at timestamptz;

CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER threads_set_updated_at
    BEFORE UPDATE ON threads
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE OR REPLACE FUNCTION touch_thread_last_message()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE threads
       SET last_message_at = NEW.created_at
     WHERE id = NEW.thread_id
       AND (last_message_at IS NULL OR last_message_at < NEW.created_at);
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION touch_thread_last_message() IS 'Keeps threads.last_message_at in sync with inserted messages.';

CREATE TRIGGER messages_touch_thread
    AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION touch_thread_last_message();
