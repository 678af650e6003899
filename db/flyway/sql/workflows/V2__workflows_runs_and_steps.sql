-- Workflow executions and per-step state.

CREATE TABLE workflow_runs (
    id                   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_version_id  uuid        NOT NULL REFERENCES workflow_versions (id) ON DELETE RESTRICT,
    tenant_id            uuid        NOT NULL,
    status               text        NOT NULL DEFAULT 'pending',
    input                jsonb       NOT NULL DEFAULT '{}'::jsonb,
    output               jsonb,
    error                text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    CONSTRAINT workflow_runs_status_chk
        CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'))
);

CREATE INDEX workflow_runs_tenant_created_idx ON workflow_runs (tenant_id, created_at DESC);
CREATE INDEX workflow_runs_version_idx ON workflow_runs (workflow_version_id);
CREATE INDEX workflow_runs_open_idx ON workflow_runs (status) WHERE status IN ('pending', 'running', 'waiting');

COMMENT ON TABLE workflow_runs IS 'One execution of a workflow version.';

CREATE TABLE workflow_step_runs (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    run_id        uuid        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_key      text        NOT NULL,
    attempt       integer     NOT NULL DEFAULT 1,
    status        text        NOT NULL DEFAULT 'pending',
    output        jsonb,
    error         text,
    started_at    timestamptz,
    finished_at   timestamptz,
    CONSTRAINT workflow_step_runs_attempt_key UNIQUE (run_id, step_key, attempt),
    CONSTRAINT workflow_step_runs_attempt_chk CHECK (attempt >= 1),
    CONSTRAINT workflow_step_runs_status_chk
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped'))
);

COMMENT ON TABLE workflow_step_runs IS 'State of each step attempt inside a workflow run.';

CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER workflow_definitions_set_updated_at
    BEFORE UPDATE ON workflow_definitions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER workflow_runs_set_updated_at
    BEFORE UPDATE ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
