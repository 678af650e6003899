-- LangGraph checkpointer storage (compatible with the Postgres saver layout).

CREATE TABLE checkpoint_migrations (
    v  integer PRIMARY KEY
);

COMMENT ON TABLE checkpoint_migrations IS 'Migration markers expected by the LangGraph Postgres saver; managed by Flyway here.';

CREATE TABLE checkpoints (
    thread_id             text  NOT NULL,
    checkpoint_ns         text  NOT NULL DEFAULT '',
    checkpoint_id         text  NOT NULL,
    parent_checkpoint_id  text,
    type                  text,
    checkpoint            jsonb NOT NULL,
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);

COMMENT ON TABLE checkpoints IS 'Graph state snapshots per thread and namespace.';

CREATE TABLE checkpoint_blobs (
    thread_id      text  NOT NULL,
    checkpoint_ns  text  NOT NULL DEFAULT '',
    channel        text  NOT NULL,
    version        text  NOT NULL,
    type           text  NOT NULL,
    blob           bytea,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);

COMMENT ON TABLE checkpoint_blobs IS 'Serialized channel values referenced by checkpoints.';

CREATE TABLE checkpoint_writes (
    thread_id      text    NOT NULL,
    checkpoint_ns  text    NOT NULL DEFAULT '',
    checkpoint_id  text    NOT NULL,
    task_id        text    NOT NULL,
    idx            integer NOT NULL,
    channel        text    NOT NULL,
    type           text,
    blob           bytea   NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);

COMMENT ON TABLE checkpoint_writes IS 'Pending writes produced by tasks before a checkpoint is committed.';
