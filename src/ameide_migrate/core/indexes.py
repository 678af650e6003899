"""Indexes as read from PostgreSQL: one left INVALID by a CREATE INDEX CONCURRENTLY that did not
finish, one found under the name a migration gives it, and the statement that drops either
without blocking writes (composed with `psycopg.sql`, which only quotes: no connection)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class InvalidIndex:
    schema: str
    name: str
    table: str
    definition: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def drop(self) -> str:
        """The statement that removes it without blocking writes to its table."""
        return drop_index_concurrently(self.schema, self.name)


def drop_index_sql(schema: str, name: str) -> sql.Composed:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))


def drop_index_concurrently(schema: str, name: str) -> str:
    """The statement as a person runs it (the fixes print it)."""
    return drop_index_sql(schema, name).as_string(None) + ";"


@dataclass(frozen=True)
class NamedIndex:
    """An index found under a name a migration gives it."""

    schema: str
    name: str
    table: str
    valid: bool
    """False for an index whose CREATE INDEX CONCURRENTLY did not finish (or is still running)."""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def drop(self) -> str:
        return drop_index_concurrently(self.schema, self.name)


IndexOnTable = tuple[str, str]
"""An index's name and its table's, as a CREATE INDEX statement writes them (`"Idx"`, `s.t`)."""
