-- Tenant scoping and free-form metadata for threads.

ALTER TABLE threads
    ADD COLUMN tenant_id uuid,
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT threads_metadata_is_object_chk CHECK (jsonb_typeof(metadata) = 'object');

CREATE INDEX threads_tenant_created_idx ON threads (tenant_id, created_at DESC);
CREATE INDEX threads_metadata_gin_idx ON threads USING gin (metadata jsonb_path_ops);

COMMENT ON COLUMN threads.tenant_id IS 'Owning tenant (id from the platform database); nullable for legacy rows.';
COMMENT ON COLUMN threads.metadata IS 'Client supplied key/value metadata used for filtering threads.';
