-- Lookup indexes for checkpoint tables and saver migration markers.

CREATE INDEX checkpoints_thread_id_idx ON checkpoints (thread_id);
CREATE INDEX checkpoint_blobs_thread_id_idx ON checkpoint_blobs (thread_id);
CREATE INDEX checkpoint_writes_thread_id_idx ON checkpoint_writes (thread_id);

ALTER TABLE checkpoint_writes ADD COLUMN task_path text NOT NULL DEFAULT '';

-- The schema is owned by Flyway; mark all saver migrations as applied so the
-- library does not try to run its own DDL at startup.
INSERT INTO checkpoint_migrations (v)
SELECT generate_series(0, 9)
ON CONFLICT (v) DO NOTHING;
