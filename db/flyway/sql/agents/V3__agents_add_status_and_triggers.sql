-- Lifecycle status for agents and updated_at maintenance.

ALTER TABLE agents
    ADD COLUMN status text NOT NULL DEFAULT 'draft',
    ADD COLUMN current_version_id uuid REFERENCES agent_versions (id) ON DELETE SET NULL,
    ADD CONSTRAINT agents_status_chk CHECK (status IN ('draft', 'active', 'archived'));

CREATE INDEX agents_tenant_status_idx ON agents (tenant_id, status);

COMMENT ON COLUMN agents.current_version_id IS 'Version served by default when the agent is invoked.';

CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER agents_set_updated_at
    BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER tools_set_updated_at
    BEFORE UPDATE ON tools
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
