"""The runtimes the CRI contract suite runs against, each behind its own socket.

Every test in this directory takes ``rt`` (what is under test) and ``cri`` (a
connected client with a call trace); both are parametrized over the runtimes,
so one suite proves that the kubelet side can swap them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import TraceRecorder
from tests.harness.fixtures import HarnessImages

#: A repository the fake is told to fail and the local registry does not have.
MISSING_REPO = "does-not-exist"
FAKE_IMAGE_HOST = "127.0.0.1:5999"


@dataclass(frozen=True)
class RuntimeUnderTest:
    name: str  # "fake", "containerd", "docker"
    endpoint: str
    busybox: str  # a pullable busybox reference
    busybox_digest: str  # its manifest digest ("" when the runtime makes its own)
    missing_image: str  # a well-formed reference that cannot be pulled
    ours: bool  # one of minikubelet's own runtimes: exact status codes are asserted


@pytest.fixture(scope="session")
def fake_endpoint() -> Iterator[str]:
    """``minikubelet runtime serve fake`` as its own process on a private socket."""
    with tempfile.TemporaryDirectory(prefix="mk-fake-", dir="/tmp") as tmp:
        endpoint = f"unix://{tmp}/fake.sock"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minikubelet",
                "runtime",
                "serve",
                "fake",
                "--listen",
                endpoint,
                "--fail-image",
                f"*/{MISSING_REPO}:*",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "serving" not in line:
                pytest.fail(f"the simulated runtime did not start: {line!r}", pytrace=False)
            yield endpoint
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture(scope="session", params=["fake", "native", "containerd", "docker"])
def rt(request: pytest.FixtureRequest) -> RuntimeUnderTest:
    if request.param == "fake":
        endpoint = request.getfixturevalue("fake_endpoint")
        return RuntimeUnderTest(
            name="fake",
            endpoint=endpoint,
            busybox=f"{FAKE_IMAGE_HOST}/busybox:1.35",
            busybox_digest="",
            missing_image=f"{FAKE_IMAGE_HOST}/{MISSING_REPO}:1",
            ours=True,
        )
    images: HarnessImages = request.getfixturevalue("test_images")
    host = images.busybox.split("/")[0]
    if request.param == "native":
        native = request.getfixturevalue("native_runtime")
        return RuntimeUnderTest(
            name="native",
            endpoint=native.endpoint,
            busybox=images.busybox,
            busybox_digest=images.busybox_digest,
            missing_image=f"{host}/{MISSING_REPO}:1",
            ours=True,
        )
    if request.param == "docker":
        docker = request.getfixturevalue("docker_runtime")
        return RuntimeUnderTest(
            name="docker",
            endpoint=docker.endpoint,
            busybox=images.busybox,
            busybox_digest=images.busybox_digest,
            missing_image=f"{host}/{MISSING_REPO}:1",
            ours=True,
        )
    containerd = request.getfixturevalue("containerd")
    return RuntimeUnderTest(
        name="containerd",
        endpoint=containerd.endpoint,
        busybox=images.busybox,
        busybox_digest=images.busybox_digest,
        missing_image=f"{host}/{MISSING_REPO}:1",
        ours=False,
    )


@pytest.fixture(scope="session")
async def cri(rt: RuntimeUnderTest) -> AsyncIterator[CRIClient]:
    client = CRIClient(rt.endpoint, timeout=60, recorder=TraceRecorder())
    await client.connect()
    await client.pull_image(rt.busybox)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def log_dir() -> Iterator[Path]:
    """A pod log directory the runtime (root) can write and the test can read."""
    with tempfile.TemporaryDirectory(prefix="mk-logs-") as tmp:
        os.chmod(tmp, 0o700)
        yield Path(tmp)
