"""Session fixtures: a local registry, locally built images, a private containerd and dockerd,
a Kubernetes control plane."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.containerd import CNI_BIN_DIR, Containerd, ContainerdError
from tests.harness.controlplane import ControlPlane, ControlPlaneError, find_binaries
from tests.harness.dockerd import DOCKERD_PACKAGE, Dockerd, DockerdError, RuntimeServer
from tests.harness.egress import EgressTrap
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
#: What the example manifests name (``image: busybox:1.36``), i.e. Docker Hub's
#: ``docker.io/library/busybox:1.36``: the harness containerd resolves ``docker.io``
#: to the local registry alone, which serves the locally built busybox under this name.
HUB_NAMESPACE = "docker.io"
HUB_BUSYBOX_REPO, HUB_BUSYBOX_TAG = "library/busybox", "1.36"


@dataclass(frozen=True)
class HarnessImages:
    """Full references (``127.0.0.1:PORT/name:tag``) of the images pushed for the tests."""

    busybox: str
    pause: str
    busybox_digest: str
    pause_digest: str
    #: ``docker.io/library/busybox:1.36`` (same manifest as ``busybox``), what manifests/ use.
    hub_busybox: str = f"{HUB_NAMESPACE}/{HUB_BUSYBOX_REPO}:{HUB_BUSYBOX_TAG}"


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
        push_image(busybox, local_registry.host, HUB_BUSYBOX_REPO, HUB_BUSYBOX_TAG)
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
def egress_trap() -> Iterator[EgressTrap]:
    """The proxy containerd is given: it refuses and records any non-loopback request."""
    with EgressTrap() as trap:
        yield trap


@pytest.fixture(scope="session")
def containerd(
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    egress_trap: EgressTrap,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Containerd]:
    """A private containerd whose CRI plugin pulls from ``local_registry`` over HTTP.

    ``docker.io`` is served by ``local_registry`` alone (so ``busybox:1.36`` pulls
    without the internet), and the daemon's HTTP(S) proxy is ``egress_trap``: a
    request for any host but 127.0.0.0/8 is refused there and fails the session.
    """
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
        mirrors={HUB_NAMESPACE: f"http://{local_registry.host}"},
        proxy_env=egress_trap.proxy_env(),
    )
    try:
        daemon.start()
    except ContainerdError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()
    if egress_trap.unexpected():
        pytest.fail(
            f"containerd tried to reach hosts off this machine: {egress_trap.unexpected()}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def dockerd(
    local_registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dockerd]:
    """A private dockerd: own data root, exec root, socket and bridge (tests/harness/dockerd.py).

    Its HTTP(S) proxy is an egress trap of its own: registries on 127.0.0.0/8 are
    reached directly, a request for any other host is refused and fails the session.
    """
    _require_root()
    require("dockerd", DOCKERD_PACKAGE)
    require("containerd", "containerd")
    require("runc", "runc")
    require("ip", "iproute2")
    with EgressTrap() as trap:
        daemon = Dockerd(
            tmp_path_factory.mktemp("dockerd"),
            insecure_registries=[local_registry.host],
            proxy_env=trap.proxy_env(),
        )
        try:
            daemon.start()
        except DockerdError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield daemon
        finally:
            daemon.stop()
        if trap.attempts:
            pytest.fail(f"dockerd tried to reach hosts off this machine: {trap.attempts}")


@pytest.fixture(scope="session")
def docker_runtime(
    dockerd: Dockerd, local_registry: LocalRegistry, test_images: HarnessImages
) -> Iterator[RuntimeServer]:
    """``minikubelet runtime serve docker`` on a private socket, driving ``dockerd``.

    ``docker.io`` is mirrored by ``local_registry`` (``busybox:1.36`` pulls without
    the internet); the runtime builds its pause image itself (gcc).
    """
    require("gcc", "gcc and libc6-dev")
    server = RuntimeServer(
        Path(tempfile.mkdtemp(prefix="mk-docker-", dir="/tmp")),
        dockerd.host,
        registry_mirrors=[f"{HUB_NAMESPACE}=http://{local_registry.host}"],
    )
    try:
        server.start()
    except DockerdError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        log = server.log()
        shutil.rmtree(server.socket_dir, ignore_errors=True)
    if "Traceback" in log:
        pytest.fail(f"the docker runtime logged a traceback:\n{log[-4000:]}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.

    Started once per session (tests/harness/controlplane.py): ``control_plane.url``,
    ``.ca_path``, ``.admin_kubeconfig``, ``.node_kubeconfig(NAME)``, ``.kubectl(...)``
    (the real kubectl as the admin), ``.apiserver.stop()``/``.apiserver.start()``.
    A missing binary skips the tests that use it, or fails them when ``CI=true``.
    """
    binaries = find_binaries()
    if isinstance(binaries, str):
        if os.environ.get("CI") == "true":
            pytest.fail(binaries, pytrace=False)
        pytest.skip(binaries)
    plane = ControlPlane(binaries)
    failure = None
    try:
        plane.start()
    except ControlPlaneError as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield plane
    finally:
        plane.close()
