-- Output schema registry, updated_at maintenance and a run overview view.

CREATE TABLE output_schemas (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    pipeline_id  uuid        NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    version      integer     NOT NULL,
    json_schema  jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT output_schemas_pipeline_version_key UNIQUE (pipeline_id, version),
    CONSTRAINT output_schemas_version_chk CHECK (version > 0),
    CONSTRAINT output_schemas_is_object_chk CHECK (jsonb_typeof(json_schema) = 'object')
);

COMMENT ON TABLE output_schemas IS 'Versioned JSON Schema describing what a pipeline produces.';

CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER pipelines_set_updated_at
    BEFORE UPDATE ON pipelines
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE VIEW pipeline_last_runs AS
SELECT DISTINCT ON (r.pipeline_id)
    r.pipeline_id,
    p.tenant_id,
    p.name AS pipeline_name,
    r.id AS run_id,
    r.status,
    r.records_in,
    r.records_out,
    r.queued_at,
    r.finished_at
FROM pipeline_runs r
JOIN pipelines p ON p.id = r.pipeline_id
ORDER BY r.pipeline_id, r.queued_at DESC;

COMMENT ON VIEW pipeline_last_runs IS 'Most recent run of every pipeline.';
