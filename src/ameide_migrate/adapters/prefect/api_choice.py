"""Which Prefect API a command talks to, chosen before Prefect is imported, and where a person
sees it."""

from __future__ import annotations

import os
import re
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ameide_migrate.adapters.prefect.automations import HEARTBEAT_ENV
from ameide_migrate.adapters.prefect.local_server import ensure_server
from ameide_migrate.config import state
from ameide_migrate.core.errors import PrefectApiNotConfigured, PrefectApiUnreachable


@dataclass(frozen=True)
class Api:
    """The Prefect API a command talks to, and where a person sees it."""

    api_url: str
    ui_url: str
    local: bool
    """The embedded local server of `ameide-migrate local up`."""


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect reads it: the environment first, then the active profile.

    Read without importing Prefect, which fixes its settings once at import: this decides what
    they will be.
    """
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        document = tomllib.loads(profiles.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or document.get("active")
    settings = document.get("profiles", {}).get(active, {})
    value = settings.get("PREFECT_API_URL")
    return str(value) if value is not None else None


def choose_api(state_dir: Path, *, local_allowed: bool, needed_for: str) -> Api:
    """Point this process at the Prefect API it should use, before Prefect is imported.

    PREFECT_API_URL (or the active Prefect profile's) when set; else, where `local_allowed`, the
    embedded local server, started when it is not running. Never Prefect's temporary server: a
    run recorded there is gone when the command ends. Missing (where a local server will not
    do), empty, malformed or unreachable is a `FAILED:` that names the variable and the address.
    """
    configured = configured_api_url()
    if configured is None:
        if not local_allowed:
            raise PrefectApiNotConfigured(
                f"PREFECT_API_URL is not set, and {needed_for} needs the Prefect server where "
                "the deployments live: set PREFECT_API_URL to its API address "
                "(http://HOST:4200/api, or Prefect Cloud's workspace URL with PREFECT_API_KEY)"
            )
        server = ensure_server(state.writable(state_dir) / "prefect")
        api = Api(server.api_url, server.ui_url, local=True)
    elif not configured.strip():
        raise PrefectApiNotConfigured(
            "PREFECT_API_URL is set but empty (a CI secret that is not defined?): set it to the "
            "Prefect server's API address (http://HOST:4200/api)"
            + (", or unset it to use the local server" if local_allowed else "")
        )
    else:
        url = configured.strip().rstrip("/")
        _check_reachable(url)
        api = Api(url, ui_url_of(url), local=False)
    os.environ["PREFECT_API_URL"] = api.api_url
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    # A run of this process that stops beating (killed, its machine gone) is crashed by the
    # heartbeat guard instead of staying Running forever.
    for variable, value in HEARTBEAT_ENV.items():
        os.environ.setdefault(variable, value)
    if "prefect" in sys.modules:
        from prefect.settings import get_current_settings

        if str(get_current_settings().api.url or "").rstrip("/") != api.api_url:
            raise RuntimeError("Prefect was imported before the command chose its API")
    return api


def _check_reachable(api_url: str, timeout: float = 5.0) -> None:
    """Any HTTP answer will do (Prefect Cloud answers 401 without a key); silence will not."""
    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrefectApiUnreachable(
            f"PREFECT_API_URL={api_url!r} is not an http(s) URL: set it to the Prefect server's "
            "API address, e.g. http://127.0.0.1:4200/api"
        )
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout):  # noqa: S310
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise PrefectApiUnreachable(
            f"the Prefect API at {api_url} (PREFECT_API_URL) does not answer ({reason}): start "
            "the server, or point PREFECT_API_URL at one that runs"
        ) from None


def ui_url_of(api_url: str) -> str:
    """PREFECT_UI_URL when set, else Prefect Cloud's app address or the API's own host."""
    if os.environ.get("PREFECT_UI_URL"):
        return os.environ["PREFECT_UI_URL"].rstrip("/")
    cloud = re.fullmatch(
        r"https://api\.prefect\.cloud/api/accounts/([^/]+)/workspaces/([^/]+)", api_url
    )
    if cloud:
        return f"https://app.prefect.cloud/account/{cloud[1]}/workspace/{cloud[2]}"
    return api_url.removesuffix("/api")


def ui_address_of_flow_run(ui_url: str, flow_run_id: str) -> str:
    return f"{ui_url}/runs/flow-run/{flow_run_id}"


def current_api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)
