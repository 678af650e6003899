"""A non-transactional migration cut short: its first statements applied, and no history row.

Flyway records a migration once it has run it. One it runs outside a transaction (a CREATE INDEX
CONCURRENTLY) whose run is killed midway (the run's process, its pod, its machine) leaves what
its first statements built and no row: the history says the migration is pending, and applying
it again fails on "relation already exists" (or, with IF NOT EXISTS, skips an INVALID index and
records a success). Nothing rolled it back; no error was ever reported for it.

It is found from what the database holds: the first pending migration is non-transactional and
an index one of its CREATE INDEX CONCURRENTLY statements names is there. The way back is to undo
what it built (each such index dropped CONCURRENTLY) and run it again whole: Flyway can record a
migration only by running it, so finishing its statements by hand would leave it pending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ameide_migrate.core import locking, statements
from ameide_migrate.core.catalog import DatabaseCatalog, Migration
from ameide_migrate.core.errors import LeftoversFound
from ameide_migrate.core.history import HistoryRow, pending_migrations
from ameide_migrate.core.indexes import IndexOnTable, NamedIndex
from ameide_migrate.core.placeholders import as_run


@dataclass(frozen=True)
class IndexBuild:
    """A CREATE INDEX CONCURRENTLY statement of a migration, and the names it gives its index
    and its table."""

    statement: statements.Statement
    name: str
    """As PostgreSQL reads it back (`idx`, `"Idx"`); PostgreSQL creates it in its table's
    schema."""
    table: str
    """As the statement names it (`t`, `s.t`), in Flyway's default schema when unqualified."""
    if_not_exists: bool

    @property
    def looked_for(self) -> IndexOnTable:
        return self.name, self.table


def index_builds(sql_text: str, schema: str | None = None) -> list[IndexBuild]:
    """The script's CREATE INDEX CONCURRENTLY statements that name their index (one that does
    not gets a name PostgreSQL makes up, which cannot be looked for; one that qualifies it is
    refused by PostgreSQL, having built nothing). An unqualified table is in `schema` when
    Flyway runs the script with it as its default schema."""
    found = []
    for statement in statements.split(sql_text):
        build = locking.index_creation(statement)
        if build is None or not build.concurrently or build.name is None:
            continue
        if not locking.unqualified(build.name):
            continue
        table = build.table
        if schema and locking.unqualified(table):
            table = '"{}".{}'.format(schema.replace('"', '""'), table)
        found.append(IndexBuild(statement, build.name, table, build.if_not_exists))
    return found


@dataclass(frozen=True)
class Interrupted:
    """The first pending migration of a database, found half applied."""

    database: str
    migration: Migration
    built: tuple[tuple[IndexBuild, NamedIndex], ...]
    """Each statement whose index is there, with the index as PostgreSQL holds it."""

    def undo(self) -> list[str]:
        """The statements that take the database back to before the migration: every index it
        built dropped without blocking writes."""
        return [index.drop() for _, index in self.built]

    def remaining(self) -> list[statements.Statement]:
        """The statements after the last one whose index is complete: those it had yet to run
        (and the one it was running)."""
        script = statements.split(self.migration.text())
        done = [build.statement.line for build, index in self.built if index.valid]
        last = max(done, default=0)
        return [st for st in script if st.line > last]

    def describe(self) -> str:
        """What it left, and what it had yet to do, one sentence a part."""
        found = ", ".join(
            f"index {index.qualified} on {index.table}"
            + ("" if index.valid else " (INVALID: its build was cut short)")
            + f" (line {build.statement.line})"
            for build, index in self.built
        )
        left = "; ".join(f"line {st.line}: {st.words[:120]}" for st in self.remaining())
        return (
            f"{self.migration.script} was interrupted: it runs outside a transaction, so "
            f"PostgreSQL did not roll it back, and it has no history row. In the database: "
            f"{found}. Not done: {left or 'nothing (only its history row is missing)'}."
        )


IndexLookup = Callable[[Sequence[IndexOnTable]], dict[IndexOnTable, NamedIndex]]
"""Of the indexes given (each by its name and its table's), those in the database
(`adapters.postgres.index_catalog.indexes_named`)."""


def find(
    database: str,
    template: DatabaseCatalog,
    history: list[HistoryRow] | None,
    lookup: IndexLookup,
) -> Interrupted | None:
    """The database's first pending migration when it was cut short and applying it again would
    fail on what it left, else None; `lookup` is asked only when that migration is
    non-transactional and names an index."""
    pending = pending_migrations(template, history)
    if not pending:
        return None
    first = pending[0]
    text = as_run(template, first)
    if not statements.non_transactional(text):
        return None  # run in one transaction: PostgreSQL rolled all of it back
    builds = index_builds(text, template.flyway.schema)
    if not builds:
        return None
    present = lookup([b.looked_for for b in builds])
    built = [(b, present[b.looked_for]) for b in builds if b.looked_for in present]
    # Applying it again fails on an index whose statement has no IF NOT EXISTS, and skips an
    # INVALID one, recording a lie. Valid indexes of IF NOT EXISTS statements are skipped as
    # they should be: the rerun finishes the migration, and there is nothing to name (nor can
    # they be told from indexes an earlier migration built under the same names).
    if not any(not index.valid or not b.if_not_exists for b, index in built):
        return None
    return Interrupted(database, first, tuple(built))


class MigrationInterrupted(LeftoversFound):
    """The database's first pending migration was cut short (`found`): applying it again would
    fail on what it built, or record a success over an INVALID index."""

    def __init__(self, message: str, found: Interrupted) -> None:
        super().__init__(message)
        self.found = found
