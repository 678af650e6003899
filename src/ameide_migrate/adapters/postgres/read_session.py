"""One read-only connection for reads that belong together (a validate's)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg

from ameide_migrate.adapters.postgres.connection import Credentials, connect, reading
from ameide_migrate.adapters.postgres.index_catalog import indexes_named_on, invalid_indexes_on
from ameide_migrate.adapters.postgres.schema_history import history_on
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.indexes import IndexOnTable, InvalidIndex, NamedIndex


class Session:
    """One read-only connection to a database, for reads that belong together (a validate's)."""

    def __init__(self, conn: psycopg.Connection, creds: Credentials) -> None:
        self._conn, self._creds = conn, creds

    def history(self, table: str) -> list[HistoryRow] | None:
        return history_on(self._conn, self._creds, table)

    def indexes_named(self, wanted: Sequence[IndexOnTable]) -> dict[IndexOnTable, NamedIndex]:
        return indexes_named_on(self._conn, self._creds, wanted)

    def invalid_indexes(self) -> list[InvalidIndex]:
        with reading(self._creds, "its indexes"):
            return invalid_indexes_on(self._conn)


@contextmanager
def read_only_session(creds: Credentials, *, timeout: int = 5) -> Iterator[Session]:
    with connect(creds, timeout=timeout, read_only=True) as conn:
        yield Session(conn, creds)
