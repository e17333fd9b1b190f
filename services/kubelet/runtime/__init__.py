"""Container runtimes for the kubelet: the ``ContainerRuntime`` protocol, its config types and
errors. The implementations live in ``.docker`` (docker-py) and ``.process`` (host processes)
and are imported from there, so a node without docker-py's engine never touches it."""

from .base import (
    LABEL_CONTAINER_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_SANDBOX,
    ContainerConfig,
    ContainerInfo,
    ContainerRuntime,
    ContainerState,
    Mount,
    PortMapping,
    PullPolicy,
    SandboxConfig,
)
from .errors import (
    ContainerCreateError,
    ContainerNotFound,
    ContainerRuntimeError,
    ExecTimeout,
    ImageNeverPullError,
    ImagePullError,
    RuntimeUnavailable,
)

__all__ = [
    "LABEL_CONTAINER_ATTEMPT",
    "LABEL_CONTAINER_NAME",
    "LABEL_POD_NAME",
    "LABEL_POD_NAMESPACE",
    "LABEL_POD_UID",
    "LABEL_SANDBOX",
    "ContainerConfig",
    "ContainerCreateError",
    "ContainerInfo",
    "ContainerNotFound",
    "ContainerRuntime",
    "ContainerRuntimeError",
    "ContainerState",
    "ExecTimeout",
    "ImageNeverPullError",
    "ImagePullError",
    "Mount",
    "PortMapping",
    "PullPolicy",
    "RuntimeUnavailable",
    "SandboxConfig",
]
