"""Roles and databases made and dropped, as the local stack and the dev loop need them."""

from __future__ import annotations

from psycopg import sql

from ameide_migrate.adapters.postgres.connection import Credentials, connect


def ensure_roles_and_databases(admin: Credentials, owners: list[Credentials]) -> bool:
    """Create each owner's role and database where missing; True when something was created.

    An existing role keeps its password, as an existing secret keeps its keys: a wrong one is
    the secret gate's to report, not for seeding to put back silently. What exists is read in
    two queries, so that a fleet's thousand targets cost two round trips when all are there.
    """
    created = False
    with connect(admin) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([o.user for o in owners],)
        )
        roles = {str(row[0]) for row in cur.fetchall()}
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            ([o.database for o in owners],),
        )
        databases = {str(row[0]) for row in cur.fetchall()}
        for owner in owners:
            if owner.user not in roles:
                # A SCRAM verifier computed here: the plain password never reaches the server,
                # its statistics or its logs.
                verifier = conn.pgconn.encrypt_password(
                    owner.password.get_secret_value().encode(),
                    owner.user.encode(),
                    b"scram-sha-256",
                )
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(owner.user), sql.Literal(verifier.decode())
                    )
                )
                roles.add(owner.user)
                created = True
            if owner.database not in databases:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(owner.database), sql.Identifier(owner.user)
                    )
                )
                databases.add(owner.database)
                created = True
    return created


def drop_database(admin: Credentials, database: str) -> bool:
    """Drop the database, ending its sessions first (PostgreSQL 13+); True when it existed.
    Its owner stays, so `ensure_roles_and_databases` makes it again, empty, with the same
    credentials."""
    with connect(admin) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if cur.fetchone() is None:
            return False
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
    return True
