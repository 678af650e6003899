-- API keys for programmatic access and an append-only audit log.

CREATE TABLE api_keys (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_by    uuid        REFERENCES users (id) ON DELETE SET NULL,
    name          text        NOT NULL,
    key_prefix    text        NOT NULL,
    key_hash      text        NOT NULL,
    scopes        text[]      NOT NULL DEFAULT ARRAY[]::text[],
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_prefix_len_chk CHECK (char_length(key_prefix) BETWEEN 4 AND 16),
    CONSTRAINT api_keys_expiry_chk CHECK (expires_at IS NULL OR expires_at > created_at)
);

CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id);
CREATE INDEX api_keys_active_prefix_idx ON api_keys (key_prefix) WHERE revoked_at IS NULL;

COMMENT ON TABLE api_keys IS 'Hashed API keys; the clear-text secret is never stored.';
COMMENT ON COLUMN api_keys.key_prefix IS 'First characters of the key, shown in the UI to identify it.';

CREATE TABLE audit_log (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    actor_type   text        NOT NULL,
    actor_id     uuid,
    action       text        NOT NULL,
    target_type  text,
    target_id    text,
    details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_log_actor_type_chk CHECK (actor_type IN ('user', 'api_key', 'system'))
);

CREATE INDEX audit_log_tenant_time_idx ON audit_log (tenant_id, occurred_at DESC);
CREATE INDEX audit_log_action_idx ON audit_log (action);

COMMENT ON TABLE audit_log IS 'Append-only record of security relevant actions per tenant.';
