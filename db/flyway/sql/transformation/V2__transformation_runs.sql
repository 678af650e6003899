-- Execution history of pipelines.

CREATE TABLE pipeline_runs (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    pipeline_id    uuid        NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    status         text        NOT NULL DEFAULT 'queued',
    trigger        text        NOT NULL DEFAULT 'manual',
    input_ref      text,
    records_in     bigint      NOT NULL DEFAULT 0,
    records_out    bigint      NOT NULL DEFAULT 0,
    error_message  text,
    queued_at      timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    CONSTRAINT pipeline_runs_status_chk
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT pipeline_runs_trigger_chk CHECK (trigger IN ('manual', 'schedule', 'event')),
    CONSTRAINT pipeline_runs_counts_chk CHECK (records_in >= 0 AND records_out >= 0),
    CONSTRAINT pipeline_runs_timing_chk
        CHECK (finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at)
);

CREATE INDEX pipeline_runs_pipeline_queued_idx ON pipeline_runs (pipeline_id, queued_at DESC);
CREATE INDEX pipeline_runs_active_idx ON pipeline_runs (status) WHERE status IN ('queued', 'running');

COMMENT ON TABLE pipeline_runs IS 'One execution of a pipeline with counters and outcome.';

CREATE TABLE pipeline_step_runs (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         uuid        NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
    step_id        uuid        NOT NULL REFERENCES pipeline_steps (id) ON DELETE CASCADE,
    status         text        NOT NULL,
    duration_ms    integer,
    error_message  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pipeline_step_runs_status_chk CHECK (status IN ('succeeded', 'failed', 'skipped')),
    CONSTRAINT pipeline_step_runs_duration_chk CHECK (duration_ms IS NULL OR duration_ms >= 0)
);

CREATE INDEX pipeline_step_runs_run_id_idx ON pipeline_step_runs (run_id);
CREATE INDEX pipeline_step_runs_step_id_idx ON pipeline_step_runs (step_id);
