-- Tool calls issued by the model during a run.

CREATE TABLE run_tool_calls (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    run_id         uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    call_id        text        NOT NULL,
    tool_name      text        NOT NULL,
    arguments      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    result         jsonb,
    status         text        NOT NULL DEFAULT 'requested',
    latency_ms     integer,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    CONSTRAINT run_tool_calls_run_call_key UNIQUE (run_id, call_id),
    CONSTRAINT run_tool_calls_status_chk CHECK (status IN ('requested', 'succeeded', 'failed', 'timed_out')),
    CONSTRAINT run_tool_calls_latency_chk CHECK (latency_ms IS NULL OR latency_ms >= 0)
);

CREATE INDEX run_tool_calls_tool_name_idx ON run_tool_calls (tool_name, requested_at DESC);

COMMENT ON TABLE run_tool_calls IS 'Each tool invocation requested by the model and its result.';
