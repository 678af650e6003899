"""Loopback ports for the servers this project starts (PostgreSQL, the Prefect server, and the
tests' Vault, registry and cluster)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now; the caller binds it soon after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
