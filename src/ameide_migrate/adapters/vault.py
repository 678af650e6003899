"""Vault (or OpenBao, the same API): logging in and reading the databases' KV v2 secrets.

The only module that imports hvac. Every Vault failure is mapped to a named error in one place
(`_translate`), following hvac's own table: 400/401 a failed login, 403 permission denied (or an
expired token), 404 a missing path, 503 sealed or down; connection failures and 5xx are transient.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import hvac
import hvac.exceptions
import requests

from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.errors import (
    SecretMissing,
    VaultAuthFailed,
    VaultError,
    VaultPermissionDenied,
    VaultSealed,
    VaultUnreachable,
)

T = TypeVar("T")


def _service_account(jwt: str) -> str:
    """`namespace/name` of a service-account token, read from its (unverified) claims."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return "an unreadable service-account token"
    k8s = claims.get("kubernetes.io", {})
    if k8s:
        return f"service account {k8s['serviceaccount']['name']} in namespace {k8s['namespace']}"
    return f"subject {claims.get('sub', 'unknown')}"


def _translate(conn: VaultSettings, action: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except requests.exceptions.ConnectionError as e:
        raise VaultUnreachable(
            f"Vault at {conn.address} is unreachable while {action}: {type(e).__name__}. "
            "Check VAULT_ADDR and that Vault is running"
        ) from None
    except requests.exceptions.Timeout:
        raise VaultUnreachable(
            f"Vault at {conn.address} did not answer within {conn.timeout_seconds:g}s "
            f"while {action}"
        ) from None
    except hvac.exceptions.VaultDown as e:
        if "sealed" in str(e).lower():
            raise VaultSealed(
                f"Vault at {conn.address} is sealed ({action}): unseal it "
                "(`bao operator unseal` / `vault operator unseal`) and rerun"
            ) from None
        raise VaultUnreachable(f"Vault at {conn.address} is down while {action}: {e}") from None
    except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway) as e:
        raise VaultUnreachable(f"Vault at {conn.address} failed while {action}: {e}") from None
    except hvac.exceptions.InvalidPath:
        raise SecretMissing(f"nothing at that path ({action})") from None
    except hvac.exceptions.Forbidden as e:
        raise VaultPermissionDenied(f"permission denied while {action}: {e}") from None
    except (hvac.exceptions.Unauthorized, hvac.exceptions.InvalidRequest) as e:
        raise VaultAuthFailed(f"Vault refused {action}: {e}") from None


@contextmanager
def session(conn: VaultSettings) -> Iterator[hvac.Client]:
    """A logged-in client; VaultAuthFailed names the identity and how to fix it."""
    verify: bool | str = str(conn.ca_cert_path) if conn.ca_cert_path else conn.verify_tls
    client = hvac.Client(
        url=conn.address, namespace=conn.namespace, verify=verify, timeout=conn.timeout_seconds
    )
    try:
        _login(conn, client)
        yield client
    finally:
        client.adapter.close()


def _login(conn: VaultSettings, client: hvac.Client) -> None:
    if conn.auth_method == "token":
        if conn.token is None:
            raise VaultAuthFailed(
                f"no Vault token for {conn.address}: set VAULT_TOKEN or the block's token"
            )
        client.token = conn.token.get_secret_value()
        try:
            _translate(conn, "checking the token", client.auth.token.lookup_self)
        except VaultPermissionDenied:
            raise VaultAuthFailed(
                f"Vault at {conn.address} does not accept the token (expired or revoked): "
                "log in again (`bao login` / `vault login`) and set VAULT_TOKEN"
            ) from None
        return
    if conn.auth_method == "approle":
        secret_id = conn.secret_id.get_secret_value() if conn.secret_id else None
        _log_in(
            conn,
            "AppRole",
            lambda: client.auth.approle.login(
                role_id=conn.role_id, secret_id=secret_id, mount_point=conn.approle_mount
            ),
            f"for {conn.who}",
            "Check the role_id and issue a fresh secret_id "
            "(`bao write -f auth/approle/role/<role>/secret-id`)",
        )
        return
    token_path = conn.service_account_token_path
    try:
        jwt = token_path.read_text().strip()
    except OSError as e:
        raise VaultAuthFailed(
            f"cannot read the service-account token at {token_path} ({e.strerror}): run in a pod "
            "whose service account token is mounted, or set the block's token path"
        ) from None
    _log_in(
        conn,
        "Kubernetes auth",
        lambda: client.auth.kubernetes.login(
            role=conn.kubernetes_role, jwt=jwt, mount_point=conn.kubernetes_mount
        ),
        f"as {_service_account(jwt)} for role {conn.kubernetes_role}",
        "Bind the service account and namespace to the role (bound_service_account_names / "
        f"bound_service_account_namespaces of auth/{conn.kubernetes_mount}/role/"
        f"{conn.kubernetes_role})",
    )


def _log_in(
    conn: VaultSettings, method: str, call: Callable[[], object], who: str, fix: str
) -> None:
    """A login whose refusal (400, 401 or 403) names who tried and how to fix it."""
    try:
        _translate(conn, f"logging in with {method}", call)
    except (VaultAuthFailed, VaultPermissionDenied) as e:
        raise VaultAuthFailed(
            f"{method} login to {conn.address} failed {who}: {e}. {fix}"
        ) from None


def read_secret(client: hvac.Client, conn: VaultSettings, path: str) -> dict[str, str]:
    """The latest version of a KV v2 secret; SecretMissing when there is none."""
    where = f"{conn.kv_mount}/{path}"
    try:
        response = _translate(
            conn,
            f"reading {where}",
            lambda: client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=conn.kv_mount, raise_on_deleted_version=True
            ),
        )
    except SecretMissing:
        raise SecretMissing(f"no secret at {where}") from None
    except VaultPermissionDenied:
        raise VaultPermissionDenied(
            f"{conn.who} may not read {where}: grant its policy `read` on "
            f"{conn.kv_mount}/data/{path}"
        ) from None
    data = response["data"]["data"] or {}
    return {str(k): str(v) for k, v in data.items()}


def write_secret(
    client: hvac.Client, conn: VaultSettings, path: str, secret: Mapping[str, str]
) -> None:
    _translate(
        conn,
        f"writing {conn.kv_mount}/{path}",
        lambda: client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(secret), mount_point=conn.kv_mount
        ),
    )


def ensure_kv_v2(client: hvac.Client, conn: VaultSettings) -> None:
    """Enable the KV v2 engine at the mount when nothing is mounted there (local seeding)."""
    mounts = _translate(conn, "listing secret engines", client.sys.list_mounted_secrets_engines)
    if f"{conn.kv_mount}/" not in mounts.get("data", mounts):
        _translate(
            conn,
            f"enabling KV v2 at {conn.kv_mount}",
            lambda: client.sys.enable_secrets_engine(
                "kv", path=conn.kv_mount, options={"version": "2"}
            ),
        )


__all__ = [
    "VaultError",
    "ensure_kv_v2",
    "read_secret",
    "session",
    "write_secret",
]
