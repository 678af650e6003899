-- Conversation threads and their messages.

CREATE TABLE threads (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id    uuid,
    title       text,
    status      text        NOT NULL DEFAULT 'open',
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT threads_status_chk CHECK (status IN ('open', 'closed', 'archived'))
);

CREATE INDEX threads_agent_id_idx ON threads (agent_id);

COMMENT ON TABLE threads IS 'A conversation between users and an agent.';

CREATE TABLE messages (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    thread_id    uuid        NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq          integer     NOT NULL,
    role         text        NOT NULL,
    content      text        NOT NULL DEFAULT '',
    tool_call_id text,
    token_count  integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_thread_seq_key UNIQUE (thread_id, seq),
    CONSTRAINT messages_role_chk CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    CONSTRAINT messages_tool_call_chk CHECK (role <> 'tool' OR tool_call_id IS NOT NULL),
    CONSTRAINT messages_token_count_chk CHECK (token_count IS NULL OR token_count >= 0)
);

COMMENT ON TABLE messages IS 'Ordered messages of a thread; seq is monotonically increasing per thread.';
