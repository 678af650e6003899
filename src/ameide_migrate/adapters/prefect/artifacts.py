"""The table artifacts runs leave, read back as rows of strings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class ArtifactTable:
    """A table artifact of the run, as rows of its columns."""

    key: str
    description: str
    rows: list[dict[str, str]]


def run_tables(client: Any, flow_run_id: UUID) -> list[ArtifactTable]:
    """The run's table artifacts, each with its rows as strings."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    found = []
    for artifact in artifacts:
        if artifact.type != "table" or not artifact.data:
            continue
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            found.append(
                ArtifactTable(
                    artifact.key or "", artifact.description or "", [_strings(r) for r in rows]
                )
            )
    return found


def shard_table(client: Any, flow_run_id: UUID) -> list[dict[str, str]]:
    """The rows of a fleet shard run's ledger (its `...-shard` table); none when it has none."""
    for table in run_tables(client, flow_run_id):
        if table.key.endswith("-shard"):
            return table.rows
    return []


def latest_table(key: str) -> list[dict[str, str]]:
    """The rows of the latest table artifact under `key` (none when there is none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    if not found or not found[0].data:
        return []
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [_strings(r) for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _strings(row: dict[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in row.items()}
