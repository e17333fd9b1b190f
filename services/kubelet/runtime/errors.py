"""What can go wrong in a container runtime, in the kubelet's vocabulary.

    ContainerRuntimeError              reason (becomes a container's waiting reason)
    ├── ImagePullError                 ErrImagePull      (the kubelet backs off: ImagePullBackOff)
    │   └── ImageNeverPullError        ErrImageNeverPull (policy Never and the image is missing)
    ├── ContainerCreateError           CreateContainerError (bad command, bad mount, start failed)
    ├── ContainerConfigError           CreateContainerConfigError (runAsNonRoot and the image runs as root)
    ├── ContainerNotFound              ContainerNotFound
    ├── ExecTimeout                    ExecTimeout       (an exec outlived its timeout; it was killed)
    └── RuntimeUnavailable             RuntimeUnavailable (the engine does not answer; retry later)

docker-py exceptions become these in ``from_docker`` and nowhere else; the runtimes raise
``from_docker(e, action) from e``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

DockerAction = Literal["pull", "create", "container", "engine"]


class ContainerRuntimeError(Exception):
    reason: ClassVar[str] = "RuntimeError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImagePullError(ContainerRuntimeError):
    reason = "ErrImagePull"


class ImageNeverPullError(ImagePullError):
    reason = "ErrImageNeverPull"


class ContainerCreateError(ContainerRuntimeError):
    reason = "CreateContainerError"


class ContainerConfigError(ContainerRuntimeError):
    reason = "CreateContainerConfigError"


class ContainerNotFound(ContainerRuntimeError):
    reason = "ContainerNotFound"


class ExecTimeout(ContainerRuntimeError):
    reason = "ExecTimeout"


class RuntimeUnavailable(ContainerRuntimeError):
    reason = "RuntimeUnavailable"


def from_docker(exc: BaseException, action: DockerAction) -> ContainerRuntimeError:
    """Translate a docker-py (or requests) exception raised while doing ``action``.

    ``pull``: fetching an image; ``create``: creating or starting a container;
    ``container``: acting on an existing container; ``engine``: anything else.
    """
    import docker.errors as de
    import requests.exceptions as rq

    if isinstance(exc, ContainerRuntimeError):
        return exc
    message = _explain(exc)
    if isinstance(exc, rq.ConnectionError | rq.Timeout):
        return RuntimeUnavailable(f"the Docker engine does not answer: {message}")
    if not isinstance(exc, de.APIError) and "fetching server API version" in message:
        return RuntimeUnavailable(f"the Docker engine does not answer: {message}")
    if action == "pull":
        return ImagePullError(message)
    if action == "create":
        if isinstance(exc, de.ImageNotFound):
            return ImagePullError(f"image is not present: {message}")
        return ContainerCreateError(message)
    if action == "container" and isinstance(exc, de.NotFound):
        return ContainerNotFound(message)
    return ContainerRuntimeError(message)


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
