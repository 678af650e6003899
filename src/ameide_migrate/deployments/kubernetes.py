"""The Kubernetes work pool's job template: prefect-kubernetes's own, hardened.

Non-root, read-only root filesystem (a writable emptyDir at /tmp), every capability dropped, no
privilege escalation, resources, a deadline, TTL after finish, and `backoffLimit: 0`: retries
belong to Prefect, which knows a transient fault from a broken migration.

`host_network` and `dns_policy` exist for a cluster without a pod network (the tests' one-node
cluster); production keeps the defaults.
"""

from __future__ import annotations

import copy
from typing import Any

from prefect_kubernetes.worker import KubernetesWorker

RUN_AS_USER = 10001  # the migrations image's non-root user

_DEFAULTS: dict[str, Any] = {
    "backoff_limit": 0,
    "finished_job_ttl": 3600,
    "cpu_request": "250m",
    "cpu_limit": "1",
    "memory_request": "512Mi",
    "memory_limit": "1Gi",
    "service_account_name": "db-migrations",
}


def job_template() -> dict[str, Any]:
    template: dict[str, Any] = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    variables = template["variables"]["properties"]
    for name, value in _DEFAULTS.items():
        variables[name]["default"] = value
    variables["active_deadline_seconds"] = {
        "title": "Active deadline (seconds)",
        "description": "The Job is stopped when a run takes longer than this.",
        "type": "integer",
        "default": 3600,
    }
    variables["host_network"] = {
        "title": "Host network",
        "description": "Run the pod in the node's network namespace, for a cluster without a "
        "pod network. Set DNS policy to ClusterFirstWithHostNet with it.",
        "type": "boolean",
        "default": False,
    }
    # Prefect's job templates have no conditionals, so the DNS policy that goes with the host
    # network is a variable of its own.
    variables["dns_policy"] = {
        "title": "DNS policy",
        "description": "The pod's DNS policy; ClusterFirstWithHostNet when on the host network.",
        "type": "string",
        "enum": ["ClusterFirst", "ClusterFirstWithHostNet", "Default"],
        "default": "ClusterFirst",
    }
    job = template["job_configuration"]["job_manifest"]
    job["spec"]["activeDeadlineSeconds"] = "{{ active_deadline_seconds }}"
    pod = job["spec"]["template"]["spec"]
    # The default template puts these in the pod spec, where Kubernetes does not know them.
    job["spec"]["completions"] = pod.pop("completions")
    job["spec"]["parallelism"] = pod.pop("parallelism")
    pod["hostNetwork"] = "{{ host_network }}"
    pod["dnsPolicy"] = "{{ dns_policy }}"
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    (container,) = pod["containers"]
    container["securityContext"] = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    return template
