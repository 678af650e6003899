-- Per-tenant resource quotas and a summary view for the admin console.

CREATE TABLE tenant_quotas (
    tenant_id         uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    max_agents        integer     NOT NULL DEFAULT 10,
    max_threads       integer     NOT NULL DEFAULT 1000,
    max_tokens_month  bigint      NOT NULL DEFAULT 1000000,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_quotas_non_negative_chk
        CHECK (max_agents >= 0 AND max_threads >= 0 AND max_tokens_month >= 0)
);

CREATE TRIGGER tenant_quotas_set_updated_at
    BEFORE UPDATE ON tenant_quotas
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE tenant_quotas IS 'Hard limits enforced by the platform per tenant.';

CREATE VIEW tenant_summary AS
SELECT
    t.id,
    t.slug,
    t.name,
    t.plan,
    t.status,
    (SELECT count(*) FROM tenant_memberships m WHERE m.tenant_id = t.id) AS member_count,
    (SELECT count(*) FROM api_keys k
      WHERE k.tenant_id = t.id
        AND k.revoked_at IS NULL
        AND (k.expires_at IS NULL OR k.expires_at > now())) AS active_api_key_count,
    q.max_agents,
    q.max_threads,
    q.max_tokens_month,
    t.created_at
FROM tenants t
LEFT JOIN tenant_quotas q ON q.tenant_id = t.id;

COMMENT ON VIEW tenant_summary IS 'One row per tenant with membership, key and quota information.';
