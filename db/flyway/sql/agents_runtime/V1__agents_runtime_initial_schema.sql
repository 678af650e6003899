-- Runtime state of agent executions: sessions and runs.

CREATE TABLE runtime_sessions (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid        NOT NULL,
    agent_id          uuid        NOT NULL,
    agent_version_id  uuid        NOT NULL,
    thread_id         uuid,
    status            text        NOT NULL DEFAULT 'active',
    started_at        timestamptz NOT NULL DEFAULT now(),
    ended_at          timestamptz,
    CONSTRAINT runtime_sessions_status_chk CHECK (status IN ('active', 'idle', 'ended')),
    CONSTRAINT runtime_sessions_end_chk CHECK (ended_at IS NULL OR ended_at >= started_at)
);

CREATE INDEX runtime_sessions_tenant_agent_idx ON runtime_sessions (tenant_id, agent_id);
CREATE INDEX runtime_sessions_thread_id_idx ON runtime_sessions (thread_id) WHERE thread_id IS NOT NULL;

COMMENT ON TABLE runtime_sessions IS 'A live binding of an agent version to a conversation thread.';

CREATE TABLE runs (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id         uuid        NOT NULL REFERENCES runtime_sessions (id) ON DELETE CASCADE,
    status             text        NOT NULL DEFAULT 'pending',
    input              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    output             jsonb,
    prompt_tokens      integer     NOT NULL DEFAULT 0,
    completion_tokens  integer     NOT NULL DEFAULT 0,
    error              text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    CONSTRAINT runs_status_chk
        CHECK (status IN ('pending', 'running', 'requires_action', 'completed', 'failed', 'cancelled')),
    CONSTRAINT runs_tokens_chk CHECK (prompt_tokens >= 0 AND completion_tokens >= 0)
);

CREATE INDEX runs_session_created_idx ON runs (session_id, created_at DESC);
CREATE INDEX runs_pending_idx ON runs (created_at) WHERE status IN ('pending', 'running');

COMMENT ON TABLE runs IS 'One invocation of an agent inside a session, with token accounting.';
