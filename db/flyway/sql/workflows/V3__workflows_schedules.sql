-- Cron based schedules that start workflow runs.

CREATE TABLE workflow_schedules (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id    uuid        NOT NULL REFERENCES workflow_definitions (id) ON DELETE CASCADE,
    cron_expr      text        NOT NULL,
    timezone       text        NOT NULL DEFAULT 'UTC',
    input          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    is_enabled     boolean     NOT NULL DEFAULT true,
    next_fire_at   timestamptz,
    last_fired_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_schedules_cron_fields_chk
        CHECK (array_length(regexp_split_to_array(btrim(cron_expr), '\s+'), 1) IN (5, 6))
);

CREATE INDEX workflow_schedules_due_idx ON workflow_schedules (next_fire_at) WHERE is_enabled;

COMMENT ON TABLE workflow_schedules IS 'Recurring triggers; cron_expr has 5 or 6 whitespace separated fields.';
COMMENT ON COLUMN workflow_schedules.next_fire_at IS 'Computed by the scheduler; NULL until first evaluation.';
