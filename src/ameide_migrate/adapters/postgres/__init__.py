"""PostgreSQL as a client sees it, one concern a module: `connection` (credentials, connecting,
psycopg's errors as the project's), `schema_history` (Flyway's history table), `provisioning`
(roles and databases), `index_catalog` (indexes: INVALID, named, dropped), `read_session` (reads
that belong together on one connection), `fingerprint` (the schema's fingerprint and what the
drift check reads), `relations` (what a migration's tables hold) and `sessions` (other clients'
sessions: who holds locks, ending a stopped run's). The server this project starts itself is
`adapters.pg_cluster`.

Everything that talks to PostgreSQL without Flyway lives here. SQL is composed with
`psycopg.sql`, never by formatting strings.
"""
