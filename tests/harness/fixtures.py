"""Session fixtures: a local registry, locally built images, and a private containerd."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.containerd import CNI_BIN_DIR, Containerd, ContainerdError
from tests.harness.images import (
    BUSYBOX_PATH,
    ImageBuildError,
    build_busybox_image,
    build_pause_image,
    push_image,
)
from tests.harness.registry import LocalRegistry, RegistryError

BUSYBOX_REPO, BUSYBOX_TAG = "busybox", "1.35"
PAUSE_REPO, PAUSE_TAG = "pause", "3.9"


@dataclass(frozen=True)
class HarnessImages:
    """Full references (``127.0.0.1:PORT/name:tag``) of the images pushed for the tests."""

    busybox: str
    pause: str
    busybox_digest: str
    pause_digest: str


def require(program: str, package: str) -> str:
    """Return the path of ``program`` or fail the test saying which package to install."""
    found = shutil.which(program) if "/" not in program else program
    if found is None or not Path(found).exists():
        pytest.fail(
            f"{program} not found: run scripts/install-deps (Debian package {package})",
            pytrace=False,
        )
    return found


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the containerd harness must run as root", pytrace=False)


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A ``docker-registry`` serving plain HTTP on 127.0.0.1."""
    require("docker-registry", "docker-registry")
    registry = LocalRegistry(workdir=tmp_path_factory.mktemp("registry"))
    try:
        registry.start()
    except RegistryError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture(scope="session")
def test_images(
    local_registry: LocalRegistry,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> HarnessImages:
    """Build the busybox and pause images and push them to ``local_registry``."""
    require("skopeo", "skopeo")
    require("gcc", "gcc and libc6-dev")
    require(str(BUSYBOX_PATH), "busybox-static")
    cache = getattr(request.config, "cache", None)
    cache_dir = (
        cache.mkdir("minikubelet-test-images")
        if cache is not None
        else tmp_path_factory.mktemp("images")
    )
    try:
        busybox = build_busybox_image(cache_dir, tag=BUSYBOX_TAG)
        pause = build_pause_image(cache_dir, tag=PAUSE_TAG)
        busybox_ref = push_image(busybox, local_registry.host, BUSYBOX_REPO)
        pause_ref = push_image(pause, local_registry.host, PAUSE_REPO)
    except ImageBuildError as exc:
        pytest.fail(str(exc), pytrace=False)
    return HarnessImages(
        busybox=busybox_ref,
        pause=pause_ref,
        busybox_digest=busybox.manifest_digest,
        pause_digest=pause.manifest_digest,
    )


@pytest.fixture(scope="session")
def containerd(
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Containerd]:
    """A private containerd whose CRI plugin pulls from ``local_registry`` over HTTP."""
    _require_root()
    require("containerd", "containerd")
    require("ctr", "containerd")
    require("runc", "runc")
    require(str(CNI_BIN_DIR / "bridge"), "containernetworking-plugins")
    require("ip", "iproute2")
    daemon = Containerd(
        tmp_path_factory.mktemp("containerd"),
        sandbox_image=test_images.pause,
        registry_host=local_registry.host,
    )
    try:
        daemon.start()
    except ContainerdError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()
