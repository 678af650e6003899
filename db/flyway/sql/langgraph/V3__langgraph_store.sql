-- Long-term memory store with TTL support.

CREATE TABLE store (
    prefix               text        NOT NULL,
    key                  text        NOT NULL,
    value                jsonb       NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    ttl_minutes          integer,
    PRIMARY KEY (prefix, key),
    CONSTRAINT store_ttl_chk CHECK (ttl_minutes IS NULL OR ttl_minutes > 0)
);

CREATE INDEX store_prefix_pattern_idx ON store (prefix text_pattern_ops);
CREATE INDEX store_expires_at_idx ON store (expires_at) WHERE expires_at IS NOT NULL;

COMMENT ON TABLE store IS 'Namespaced key/value memory shared across LangGraph threads.';
COMMENT ON COLUMN store.prefix IS 'Dot separated namespace, e.g. tenant.user.memories.';

CREATE OR REPLACE FUNCTION store_set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.ttl_minutes IS NOT NULL THEN
        NEW.expires_at := now() + make_interval(mins => NEW.ttl_minutes);
    END IF;
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION store_set_updated_at() IS 'Stamps updated_at and refreshes expires_at from ttl_minutes.';

CREATE TRIGGER store_set_updated_at
    BEFORE INSERT OR UPDATE ON store
    FOR EACH ROW EXECUTE FUNCTION store_set_updated_at();
