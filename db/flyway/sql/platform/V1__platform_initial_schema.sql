-- Platform core schema: tenants, users and tenant memberships.

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text        NOT NULL,
    name        text        NOT NULL,
    plan        text        NOT NULL DEFAULT 'free',
    status      text        NOT NULL DEFAULT 'active',
    settings    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_slug_format_chk CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    CONSTRAINT tenants_plan_chk CHECK (plan IN ('free', 'team', 'enterprise')),
    CONSTRAINT tenants_status_chk CHECK (status IN ('active', 'suspended', 'deleted'))
);

COMMENT ON TABLE tenants IS 'Top-level isolation unit; every platform resource belongs to exactly one tenant.';
COMMENT ON COLUMN tenants.slug IS 'URL-safe unique identifier of the tenant.';

CREATE TABLE users (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email          text        NOT NULL,
    display_name   text,
    external_id    text,
    is_active      boolean     NOT NULL DEFAULT true,
    last_login_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_format_chk CHECK (position('@' IN email) > 1)
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE UNIQUE INDEX users_external_id_key ON users (external_id) WHERE external_id IS NOT NULL;

COMMENT ON TABLE users IS 'Human identities; a user may belong to several tenants.';

CREATE TABLE tenant_memberships (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text        NOT NULL DEFAULT 'member',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT tenant_memberships_role_chk CHECK (role IN ('owner', 'admin', 'member', 'viewer'))
);

CREATE INDEX tenant_memberships_user_id_idx ON tenant_memberships (user_id);

COMMENT ON TABLE tenant_memberships IS 'Role of a user inside a tenant.';
