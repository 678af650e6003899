"""`ameide-migrate catalog` and `chart-values`: what the environments file and the SQL tree
say, printed without touching a database."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import EnvOption, console


def chart_values(
    env: EnvOption,
    chart: Annotated[str, typer.Option(help="prefect-worker or db-migrations.")],
) -> None:
    """Print a chart's values that come from the environments file, as YAML for `helm -f`:
    `helm upgrade --install ... -f values-staging.yaml -f <(ameide-migrate chart-values ...)`."""
    import yaml

    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    values = environments.get(env, get_settings()).chart_values(chart)
    typer.echo(yaml.safe_dump(values, sort_keys=False), nl=False)


def show_catalog(env: EnvOption = "local") -> None:
    """List the databases of the SQL tree with their migrations and latest version."""
    from rich.table import Table

    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    settings = get_settings()
    catalog = environments.catalog(env, settings)
    table = Table(title=f"SQL tree {catalog.root}", title_justify="left")
    for column in ("database", "versioned", "repeatable", "latest"):
        table.add_column(column)
    for d in catalog.databases.values():
        table.add_row(
            d.name, str(len(d.versioned)), str(len(d.repeatables)), str(d.latest_version or "-")
        )
    console.print(table)
