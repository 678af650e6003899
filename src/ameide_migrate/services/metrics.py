"""Prometheus: each drift check's figures for dashboards and alerts.

Per database: applied version, pending migrations, a drift flag, when it was last checked and
how long that took. Pushed to a Pushgateway when one is configured, else written to a textfile
for node_exporter's textfile collector (written atomically, so it is never read half-written).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from ameide_migrate.core.catalog import Version
from ameide_migrate.services.drift import DriftReport, Verdict

JOB = "ameide_migrate_drift"
_DRIFTED = (Verdict.DRIFTED, Verdict.NO_HISTORY, Verdict.UNREACHABLE, Verdict.INTERRUPTED)
"""The verdicts the drift flag is raised for: `behind` alone is not drift."""


def _version_number(version: str | None) -> float:
    """A version as a number a graph can plot: 3.1 stays 3.1; none is 0."""
    if not version:
        return 0.0
    parts = Version.parse(version).parts
    return float(f"{parts[0]}.{''.join(f'{p:03d}' for p in parts[1:]) or '0'}")


def registry_for(report: DriftReport) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = ["environment", "database"]
    version = Gauge(
        "ameide_migrate_schema_version", "Applied schema version", labels, registry=registry
    )
    latest = Gauge(
        "ameide_migrate_latest_version", "Latest version in the SQL tree", labels, registry=registry
    )
    pending = Gauge(
        "ameide_migrate_pending_migrations", "Migrations not yet applied", labels, registry=registry
    )
    drifted = Gauge(
        "ameide_migrate_drift",
        "1 when the database drifted or is unreachable",
        labels,
        registry=registry,
    )
    checked = Gauge(
        "ameide_migrate_last_check_timestamp_seconds",
        "When the check ran",
        labels,
        registry=registry,
    )
    duration = Gauge(
        "ameide_migrate_check_duration_seconds",
        "How long the check took",
        labels,
        registry=registry,
    )
    for d in report.databases:
        key = (report.environment, d.database)
        version.labels(*key).set(_version_number(d.version))
        latest.labels(*key).set(_version_number(d.latest))
        pending.labels(*key).set(d.pending)
        drifted.labels(*key).set(1 if d.verdict in _DRIFTED else 0)
        checked.labels(*key).set(d.checked_at)
        duration.labels(*key).set(d.duration_s)
    return registry


def export(report: DriftReport, *, textfile: Path, pushgateway: str | None) -> str:
    """Push or write the report's metrics; returns where they went. A fleet's check has a group
    (and a textfile) of its own: a push or a write replaces all of its group's series, and the
    environment's check and the fleet's would erase each other's."""
    registry = registry_for(report)
    if pushgateway:
        group = {"environment": report.environment}
        if report.fleet is not None:
            group["fleet"] = report.fleet
        push_to_gateway(pushgateway, job=JOB, registry=registry, grouping_key=group)
        return f"pushgateway {pushgateway}"
    if report.fleet is not None:
        textfile = textfile.with_name(f"{textfile.stem}-fleet-{report.fleet}{textfile.suffix}")
    textfile.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(textfile), registry)
    return str(textfile)
