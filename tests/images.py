"""Local test images: there is no registry on test machines, so images are built by
``docker import`` of a rootfs holding the host's static busybox. Import the fixture into a
conftest (``from tests.images import busybox_image``) to use it."""

from __future__ import annotations

import pytest

from services.kubelet.runtime.docker import find_busybox, import_busybox_image

BUSYBOX_TAG = "kyb-test/busybox:local"


def build_busybox_image(client, tag: str = BUSYBOX_TAG) -> str:
    """Build ``tag`` once (a no-op when it exists); returns the tag. Default command: /bin/sh."""
    import_busybox_image(client, tag, ["/bin/sh"])
    return tag


@pytest.fixture(scope="session")
def busybox_image(docker_engine) -> str:
    if find_busybox() is None:
        pytest.skip("no static busybox on this host to build the test image")
    return build_busybox_image(docker_engine)
