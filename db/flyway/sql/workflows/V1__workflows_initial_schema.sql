-- Workflow definitions and their versioned specifications.

CREATE TABLE workflow_definitions (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL,
    description  text,
    is_active    boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_definitions_tenant_name_key UNIQUE (tenant_id, name)
);

COMMENT ON TABLE workflow_definitions IS 'A multi-step workflow orchestrating agents and tools.';

CREATE TABLE workflow_versions (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_id    uuid        NOT NULL REFERENCES workflow_definitions (id) ON DELETE CASCADE,
    version        integer     NOT NULL,
    spec           jsonb       NOT NULL,
    published_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_versions_workflow_version_key UNIQUE (workflow_id, version),
    CONSTRAINT workflow_versions_version_chk CHECK (version > 0),
    CONSTRAINT workflow_versions_spec_chk CHECK (spec ? 'steps')
);

COMMENT ON TABLE workflow_versions IS 'Immutable workflow specification; spec must contain a steps key.';
