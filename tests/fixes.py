"""Every fix the tool prints is a command it accepts.

Each `ameide-migrate ...` a text quotes in backticks is parsed by the tool's own Click app (an
unknown option, a missing one or an extra argument is a refused fix), then the names it gives (the
environment, the databases, the fleet and its targets) are resolved as the verbs resolve them: an
"unknown database" is as much a refusal as a usage error. Nothing is run. A value in capitals
(VERSION, NAME) is a placeholder the reader fills in: neither checked nor resolved.

`ameide(...)` of fix_platform checks what every command printed; `python -m tests.fixes` reads
the commands on stdin and checks them with the settings of its own environment (the command's).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from typing import Any

from typer._click.core import Context
from typer._click.exceptions import BadParameter, ClickException
from typer.core import TyperGroup
from typer.main import get_command

from ameide_migrate.cli.main import app
from ameide_migrate.commands.fleet import fleet_targets
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.core.errors import MigrateError
from ameide_migrate.services import fleet

QUOTED_COMMAND = re.compile(r"`(ameide-migrate [^`\n]+)`")
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")


def commands_in(text: str) -> list[str]:
    """The commands a text quotes, each once, in order."""
    return list(dict.fromkeys(QUOTED_COMMAND.findall(text)))


def parsed(command: str) -> tuple[str, dict[str, Any]]:
    """(the verb's path, its parameters) of `command`, parsed as the tool parses its arguments;
    ClickException when it would refuse them."""
    words = shlex.split(command)
    if words[0] != "ameide-migrate":
        raise ValueError(f"{command!r} is no ameide-migrate command")
    root = get_command(app)
    ctx: Context = root.make_context("ameide-migrate", words[1:], resilient_parsing=False)
    command_line = root
    while isinstance(command_line, TyperGroup):
        name, sub, rest = command_line.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        if sub is None or name is None:
            raise ClickException(f"no command in {command!r}")
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        command_line = sub
    return ctx.command_path, dict(ctx.params)


def _given(value: Any) -> list[str]:
    values = value if isinstance(value, list | tuple) else [] if value is None else [value]
    return [str(v) for v in values if not _PLACEHOLDER.fullmatch(str(v))]


def resolve_names(params: dict[str, Any], settings: Settings) -> None:
    """The names `params` give, resolved as the verbs resolve them (MigrateError when one is
    unknown): the environment, the databases of the tree, the fleet and its targets."""
    env = next(iter(_given(params.get("env"))), None)
    if env is None:
        return
    environments.get(env, settings)
    databases = _given(params.get("db")) + _given(params.get("reset"))
    if databases:
        environments.catalog(env, settings).select(databases)
    name = next(iter(_given(params.get("fleet"))), None)
    if name is not None:
        declared = environments.fleet(name, settings)
        targets = _given(params.get("target"))
        if targets:
            fleet.chosen_targets(declared, fleet_targets(settings, env, name), targets)


def _given_placeholder(command: str, error: BadParameter) -> bool:
    """The value refused is a placeholder the reader replaces (`--version VERSION`)."""
    words = shlex.split(command)
    opts = error.param.opts if error.param is not None else []
    values = [words[i + 1] for i, word in enumerate(words[:-1]) if word in opts]
    return bool(values) and all(_PLACEHOLDER.fullmatch(v) for v in values)


_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def refusal(command: str, settings: Settings) -> str | None:
    """Why the tool would refuse `command`, or None when it accepts it. A part in brackets is
    optional, as a usage line writes it (`approve RUN_ID [--reject --reason TEXT]`): the command
    is accepted with it and without it."""
    if _OPTIONAL.search(command):
        without, given = _OPTIONAL.sub("", command), _OPTIONAL.sub(r"\1", command)
        return refusal(without, settings) or refusal(given, settings)
    try:
        _, params = parsed(command)
        resolve_names(params, settings)
    except BadParameter as error:
        if _given_placeholder(command, error):
            return None
        return f"usage error: {error.format_message()}"
    except ClickException as error:
        return f"usage error: {error.format_message()}"
    except MigrateError as error:
        return f"{type(error).__name__}: {error}"
    return None


def main() -> None:
    """The commands on stdin, one a line; prints {command: why refused} for the refused ones,
    and exits 1 when there is one."""
    refused = {}
    for command in sys.stdin.read().splitlines():
        why = refusal(command, get_settings())
        if why is not None:
            refused[command] = why
    print(json.dumps(refused))
    raise SystemExit(1 if refused else 0)


if __name__ == "__main__":
    main()
