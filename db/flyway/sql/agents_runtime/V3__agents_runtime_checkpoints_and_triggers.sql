-- Run state checkpoints, updated_at maintenance and a usage view.

CREATE TABLE run_checkpoints (
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        integer     NOT NULL,
    state       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step),
    CONSTRAINT run_checkpoints_step_chk CHECK (step >= 0)
);

COMMENT ON TABLE run_checkpoints IS 'Serialized run state after each step, used to resume interrupted runs.';

CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER runs_set_updated_at
    BEFORE UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE VIEW tenant_daily_token_usage AS
SELECT
    s.tenant_id,
    s.agent_id,
    date_trunc('day', r.created_at) AS usage_day,
    count(*) AS run_count,
    sum(r.prompt_tokens) AS prompt_tokens,
    sum(r.completion_tokens) AS completion_tokens
FROM runs r
JOIN runtime_sessions s ON s.id = r.session_id
GROUP BY s.tenant_id, s.agent_id, date_trunc('day', r.created_at);

COMMENT ON VIEW tenant_daily_token_usage IS 'Token consumption per tenant, agent and day (input for billing).';
