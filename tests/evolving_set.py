"""A migration set as a product's schema grows over the years: a few hundred migrations of the
kinds real sets hold, for the tests that need a set that size (the real one the suite fetches,
`real_world_set`, has 69).

Each feature adds a table that references the one before it, then keeps working on it in later
migrations, as teams do: columns with and without defaults, a generated column, indexes plain,
unique, partial, trigram and CONCURRENTLY, a foreign key added NOT VALID then validated, a
backfill, a rename, an enum and a value added to it, a trigger function, a view, a DO block,
Flyway placeholders, non-ASCII names, `CREATE TABLE IF NOT EXISTS`, a partitioned table. The
versions mix dotted and underscore forms and leave gaps; the placeholders come from the set's
own flyway.toml, as its Flyway users configure it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

FLYWAY_TOML = """[flyway]
validateMigrationNaming = true

[flyway.placeholders]
team = "Plattform-Team Zürich"
retention_days = "90"
"""

FIRST = """CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE tenants (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text        NOT NULL UNIQUE,
    api_key     text        NOT NULL DEFAULT encode(gen_random_bytes(16), 'hex'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO tenants (slug) SELECT 'tenant-' || g FROM generate_series(1, 5) AS g;
"""

Step = Callable[[str, str], str]
"""(this feature's table, the previous one's) -> the migration's SQL."""


def _create(table: str, previous: str) -> str:
    return f"""-- {table}: a new kind of record, owned by a tenant, under a {previous}.
CREATE TABLE {table} (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint      NOT NULL REFERENCES tenants (id),
    parent_id   bigint      REFERENCES {previous} (id) ON DELETE SET NULL,
    name        text        NOT NULL,
    legacy_code varchar(32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX {table}_tenant_idx ON {table} (tenant_id);
"""


def _counter(table: str, previous: str) -> str:
    return f"ALTER TABLE {previous} ADD COLUMN {table}_count integer NOT NULL DEFAULT 0;\n"


def _generated(table: str, previous: str) -> str:
    return (
        f"ALTER TABLE {table}\n"
        "    ADD COLUMN name_search text GENERATED ALWAYS AS (lower(name)) STORED;\n\n"
        f"CREATE INDEX {table}_name_search_trgm ON {table} USING gin (name_search gin_trgm_ops);\n"
    )


def _seed(table: str, previous: str) -> str:
    return (
        f"INSERT INTO {table} (tenant_id, name, legacy_code)\n"
        f"SELECT 1 + g % 5, 'Ärger ' || g, 'L' || g FROM generate_series(1, 40) AS g;\n\n"
        f"UPDATE {previous} SET {table}_count = 1 WHERE id % 2 = 0;\n"
    )


def _concurrently(table: str, previous: str) -> str:
    return (
        "-- Built without blocking writes: Flyway runs this file outside a transaction.\n"
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {table}_created_idx ON {table} (created_at);\n"
    )


def _foreign_key(table: str, previous: str) -> str:
    return (
        f"ALTER TABLE {table} ADD COLUMN owner_id bigint;\n"
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_owner_fk\n"
        f"    FOREIGN KEY (owner_id) REFERENCES {previous} (id) NOT VALID;\n"
        f"ALTER TABLE {table} VALIDATE CONSTRAINT {table}_owner_fk;\n"
    )


def _enum(table: str, previous: str) -> str:
    return (
        f"CREATE TYPE {table}_status AS ENUM ('draft', 'active');\n"
        f"ALTER TABLE {table} ADD COLUMN status {table}_status NOT NULL DEFAULT 'draft';\n"
        f"CREATE INDEX {table}_active_idx ON {table} (tenant_id) WHERE status = 'active';\n"
    )


def _enum_value(table: str, previous: str) -> str:
    return f"ALTER TYPE {table}_status ADD VALUE IF NOT EXISTS 'archived';\n"


def _placeholder_comment(table: str, previous: str) -> str:
    return (
        f"COMMENT ON TABLE {table} IS 'Owned by ${{team}}; kept ${{retention_days}} days.';\n"
        f"COMMENT ON COLUMN {table}.name IS 'Shown to people; ${{flyway:user}} created it.';\n"
    )


def _trigger(table: str, previous: str) -> str:
    return f"""CREATE OR REPLACE FUNCTION {table}_touch() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    -- A comment with a ; and a 'quote' inside the body.
    NEW.created_at := coalesce(NEW.created_at, now());
    RETURN NEW;
END
$body$;

CREATE TRIGGER {table}_touch BEFORE INSERT ON {table}
    FOR EACH ROW EXECUTE FUNCTION {table}_touch();
"""


def _rename(table: str, previous: str) -> str:
    return (
        f"ALTER TABLE {table} RENAME COLUMN legacy_code TO external_code;\n"
        f"ALTER TABLE {table} ALTER COLUMN external_code TYPE text;\n"
    )


def _unique(table: str, previous: str) -> str:
    return (
        f"CREATE UNIQUE INDEX {table}_tenant_external_key\n"
        f"    ON {table} (tenant_id, external_code) WHERE external_code IS NOT NULL;\n"
    )


def _view(table: str, previous: str) -> str:
    return (
        f"CREATE OR REPLACE VIEW {table}_recent AS\n"
        f"SELECT id, tenant_id, name, created_at FROM {table}\n"
        "WHERE created_at > now() - interval '${retention_days} days';\n"
    )


def _do_block(table: str, previous: str) -> str:
    return f"""DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_name = '{table}' AND column_name = 'archived_at'
    ) THEN
        EXECUTE 'ALTER TABLE {table} ADD COLUMN archived_at timestamptz';
    END IF;
END
$$;
"""  # noqa: S608 (a migration this set writes, not a query this process runs)


def _non_ascii(table: str, previous: str) -> str:
    return (
        f'CREATE TABLE IF NOT EXISTS "{table}_größe" (\n'
        "    id      bigint PRIMARY KEY,\n"
        '    "maß"   numeric(10, 2) NOT NULL DEFAULT 0,\n'
        '    "café"  text\n'
        ");\n"
    )


def _drop_column(table: str, previous: str) -> str:
    return f"ALTER TABLE {previous} DROP COLUMN IF EXISTS {table}_count;\n"


def _required(table: str, previous: str) -> str:
    return (
        f"ALTER TABLE {table} ADD COLUMN region text;\n"
        f"UPDATE {table} SET region = 'eu' WHERE region IS NULL;\n"
        f"ALTER TABLE {table} ALTER COLUMN region SET NOT NULL;\n"
    )


STEPS: tuple[tuple[str, Step], ...] = (
    ("create", _create),
    ("counter", _counter),
    ("generated name", _generated),
    ("seed", _seed),
    ("created index", _concurrently),
    ("owner foreign key", _foreign_key),
    ("status", _enum),
    ("archived status", _enum_value),
    ("ownership comments", _placeholder_comment),
    ("touch trigger", _trigger),
    ("external code", _rename),
    ("external code key", _unique),
    ("recent view", _view),
    ("archived at", _do_block),
    ("größe", _non_ascii),
    ("drop counter", _drop_column),
    ("region", _required),
)

PARTITIONED = """CREATE TABLE events (
    tenant_id   bigint      NOT NULL,
    happened_at timestamptz NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (happened_at);

CREATE TABLE events_2026 PARTITION OF events
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_tenant_idx ON events (tenant_id, happened_at);
"""

REPEATABLE = """CREATE OR REPLACE VIEW tenant_overview AS
SELECT t.id, t.slug, count(e.*) AS events
FROM tenants t LEFT JOIN events e ON e.tenant_id = t.id
GROUP BY t.id, t.slug;
"""


def write_evolving_set(database_dir: Path, features: int = 24) -> int:
    """The set's migrations and its flyway.toml in `database_dir`; how many migrations."""
    database_dir.mkdir(parents=True, exist_ok=True)
    (database_dir / "flyway.toml").write_text(FLYWAY_TOML, encoding="utf-8")
    (database_dir / "V1__tenants.sql").write_text(FIRST, encoding="utf-8")
    (database_dir / "V1.5__events.sql").write_text(PARTITIONED, encoding="utf-8")
    (database_dir / "R__tenant_overview.sql").write_text(REPEATABLE, encoding="utf-8")
    written = 3
    previous = "tenants"
    for feature in range(features):
        table = f"feature_{feature:02d}"
        major = 2 + feature * 2  # every other major version left out: gaps
        separator = "." if feature % 2 else "_"
        for step, (title, sql) in enumerate(STEPS, start=1):
            name = f"V{major}{separator}{step}__{title.replace(' ', '_')}_{table}.sql"
            (database_dir / name).write_text(sql(table, previous), encoding="utf-8")
            written += 1
        previous = table
    return written
