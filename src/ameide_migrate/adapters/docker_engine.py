"""The Docker engine and the registry behind it, through docker-py and prefect-docker's build
and push steps: the one place that talks to Docker. What goes into the image, and its content
tag, is `image`'s business."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ameide_migrate.core.errors import (
    DockerUnavailable,
    ImageBuildFailed,
    ImagePushFailed,
    RegistryUnreachable,
)

Progress = Callable[[str], None]
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "timeout", "eof")


@contextlib.contextmanager
def client() -> Iterator[Any]:
    """The engine DOCKER_HOST names (the local socket when unset), checked to answer."""
    import docker

    try:
        client = docker.DockerClient.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise DockerUnavailable(
            f"no Docker engine answers ({e}): start Docker, or point DOCKER_HOST at one"
        ) from None
    try:
        yield client
    finally:
        client.close()


def local_image_id(client: Any, ref: str) -> str | None:
    import docker

    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def registry_digest(client: Any, ref: str) -> str | None:
    """The digest the registry holds `ref` under, or None when it has no such tag."""
    import docker

    try:
        return str(client.images.get_registry_data(ref).id)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as e:
        message = str(e.explanation or e)
        if "manifest unknown" in message or "not found" in message.lower():
            return None
        raise _registry_error(ref, message) from None


def _registry_error(ref: str, message: str) -> Exception:
    registry = ref.split("/")[0]
    if any(marker in message.lower() for marker in _UNREACHABLE):
        return RegistryUnreachable(
            f"registry {registry} does not answer ({message.strip()}): start it, or check the "
            "address given with --registry / AMEIDE_IMAGE_REGISTRY"
        )
    return ImagePushFailed(
        f"registry {registry} refused {ref} ({message.strip()}): check the repository name and "
        f"run `docker login {registry}` with an account that may push there"
    )


class _LineWriter(io.TextIOBase):
    """Hands prefect-docker's build and push output to `progress`, one line at a time."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._buffer = ""
        self.tail: list[str] = []

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in (s.rstrip() for s in lines):
            if line:
                self._progress(line)
                self.tail = [*self.tail[-19:], line]
        return len(text)


def build(
    context: Path,
    ref: str,
    *,
    pull: bool,
    buildargs: dict[str, str],
    labels: dict[str, str],
    progress: Progress,
    fix: str,
) -> str:
    """`docker build` of `context` (its Dockerfile) as `ref`, through prefect-docker's step;
    the image id. `fix` says what to change when the build itself fails."""
    from prefect.utilities.dockerutils import BuildError
    from prefect_docker.deployments.steps import build_docker_image

    repository, tag = ref.rsplit(":", 1)
    output = _LineWriter(progress)
    try:
        with contextlib.redirect_stdout(output):
            built = build_docker_image(
                image_name=repository,
                tag=tag,
                dockerfile="Dockerfile",
                ignore_cache=True,
                path=str(context),
                pull=pull,
                rm=True,
                forcerm=True,
                network_mode="host",
                buildargs=buildargs,
                labels=labels,
            )
    except RuntimeError as e:
        raise DockerUnavailable(f"the Docker engine went away while building {ref}: {e}") from None
    except BuildError as e:
        tail = "\n".join(output.tail[-10:])
        raise ImageBuildFailed(
            f"building {ref} on {buildargs.get('FLYWAY_BASE', 'its base')} failed: {e}\n{tail}\n"
            f"{fix}; nothing was pushed and no database was touched"
        ) from None
    return str(built["image_id"])


def push(repository: str, tag: str, progress: Progress) -> None:
    """`docker push` of `repository:tag`, through prefect-docker's step; the engine holds the
    registry's credentials (`docker login`)."""
    from prefect_docker.deployments.steps import push_docker_image

    output = _LineWriter(progress)
    try:
        with contextlib.redirect_stdout(output):
            push_docker_image(image_name=repository, tag=tag, ignore_cache=True)
    except OSError as e:
        raise _registry_error(f"{repository}:{tag}", str(e)) from None
    except RuntimeError as e:
        raise DockerUnavailable(f"the Docker engine went away while pushing: {e}") from None
