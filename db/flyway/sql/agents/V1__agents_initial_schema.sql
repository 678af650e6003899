-- Agent definitions and their immutable versions.

CREATE TABLE agents (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL,
    description  text,
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT agents_name_not_blank_chk CHECK (btrim(name) <> '')
);

CREATE INDEX agents_tenant_id_idx ON agents (tenant_id);

COMMENT ON TABLE agents IS 'Logical AI agent owned by a tenant (tenant ids come from the platform database).';

CREATE TABLE agent_versions (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id       uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version        integer     NOT NULL,
    model          text        NOT NULL,
    system_prompt  text        NOT NULL DEFAULT '',
    temperature    numeric(3, 2) NOT NULL DEFAULT 0.70,
    max_tokens     integer,
    config         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    published_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_versions_agent_version_key UNIQUE (agent_id, version),
    CONSTRAINT agent_versions_version_positive_chk CHECK (version > 0),
    CONSTRAINT agent_versions_temperature_chk CHECK (temperature >= 0 AND temperature <= 2),
    CONSTRAINT agent_versions_max_tokens_chk CHECK (max_tokens IS NULL OR max_tokens > 0)
);

COMMENT ON TABLE agent_versions IS 'Immutable snapshot of an agent configuration (model, prompt, parameters).';
