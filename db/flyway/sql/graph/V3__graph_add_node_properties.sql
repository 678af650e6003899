-- Free-form properties on nodes and edges, plus updated_at maintenance.

ALTER TABLE graph_nodes
    ADD COLUMN properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE graph_edges
    ADD COLUMN properties jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE INDEX graph_nodes_properties_gin_idx ON graph_nodes USING gin (properties jsonb_path_ops);

COMMENT ON COLUMN graph_nodes.properties IS 'Arbitrary JSON attributes of the entity.';

CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER graphs_set_updated_at
    BEFORE UPDATE ON graphs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER graph_nodes_set_updated_at
    BEFORE UPDATE ON graph_nodes
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
