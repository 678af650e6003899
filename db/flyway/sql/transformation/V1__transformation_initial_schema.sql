-- Data transformation pipelines and their ordered steps.

CREATE TABLE pipelines (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL,
    description  text,
    is_enabled   boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pipelines_tenant_name_key UNIQUE (tenant_id, name)
);

COMMENT ON TABLE pipelines IS 'Transformation pipeline turning raw documents into agent-ready data.';

CREATE TABLE pipeline_steps (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    pipeline_id  uuid        NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    position     integer     NOT NULL,
    step_type    text        NOT NULL,
    config       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pipeline_steps_position_key UNIQUE (pipeline_id, position),
    CONSTRAINT pipeline_steps_position_chk CHECK (position >= 0),
    CONSTRAINT pipeline_steps_type_chk
        CHECK (step_type IN ('extract', 'clean', 'chunk', 'embed', 'enrich', 'load'))
);

COMMENT ON TABLE pipeline_steps IS 'Ordered steps of a pipeline; position is zero-based.';
