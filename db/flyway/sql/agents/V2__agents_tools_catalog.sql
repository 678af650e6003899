-- Tool catalog and tool bindings per agent version.

CREATE TABLE tools (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid,
    name           text        NOT NULL,
    kind           text        NOT NULL,
    description    text,
    input_schema   jsonb       NOT NULL DEFAULT '{"type": "object"}'::jsonb,
    endpoint_url   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tools_kind_chk CHECK (kind IN ('builtin', 'http', 'function', 'retrieval')),
    CONSTRAINT tools_http_endpoint_chk CHECK (kind <> 'http' OR endpoint_url IS NOT NULL)
);

-- Global tools (tenant_id IS NULL) and tenant tools have separate name spaces.
CREATE UNIQUE INDEX tools_global_name_key ON tools (name) WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX tools_tenant_name_key ON tools (tenant_id, name) WHERE tenant_id IS NOT NULL;

COMMENT ON TABLE tools IS 'Callable tools; tenant_id NULL marks a built-in tool shared by all tenants.';

CREATE TABLE agent_version_tools (
    agent_version_id  uuid    NOT NULL REFERENCES agent_versions (id) ON DELETE CASCADE,
    tool_id           uuid    NOT NULL REFERENCES tools (id) ON DELETE RESTRICT,
    position          integer NOT NULL DEFAULT 0,
    settings          jsonb   NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (agent_version_id, tool_id)
);

CREATE INDEX agent_version_tools_tool_id_idx ON agent_version_tools (tool_id);

COMMENT ON TABLE agent_version_tools IS 'Tools enabled for a given agent version.';
