-- Read models over agents; recreated whenever this file changes.

CREATE OR REPLACE VIEW agents_with_current_version AS
SELECT
    a.id AS agent_id,
    a.tenant_id,
    a.name,
    a.status,
    v.id AS version_id,
    v.version,
    v.model,
    v.temperature,
    v.published_at,
    a.updated_at
FROM agents a
LEFT JOIN agent_versions v ON v.id = a.current_version_id;

COMMENT ON VIEW agents_with_current_version IS 'Agents joined with the version they currently serve.';

CREATE OR REPLACE VIEW agent_tool_usage AS
SELECT
    t.id AS tool_id,
    t.tenant_id,
    t.name,
    t.kind,
    count(avt.agent_version_id) AS bound_version_count
FROM tools t
LEFT JOIN agent_version_tools avt ON avt.tool_id = t.id
GROUP BY t.id, t.tenant_id, t.name, t.kind;

COMMENT ON VIEW agent_tool_usage IS 'How many agent versions bind each tool.';
