"""Real crictl (cri-tools 1.36, built on cri-api with ``KeyValue.value`` as bytes) drives
our runtimes: a pod and a container with environment variables, their values reaching the
process as written, through ``create``, ``start``, the log and ``exec -s``.

crictl is ``../shared/bin/crictl`` (see its README); the test is skipped without it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from runtimes.base.listener import serving
from runtimes.fake.images import FakeImages
from runtimes.fake.server import FakeRuntime
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

CRICTL = Path(__file__).resolve().parents[3] / "shared" / "bin" / "crictl"
FAKE_IMAGE = "registry.test/busybox:1.36"
ENVS = {"PLAIN": "hello world!", "TEXT": "café ✓ 日本"}

pytestmark = pytest.mark.skipif(not CRICTL.is_file(), reason="needs ../shared/bin/crictl")


async def crictl(endpoint: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(CRICTL),
        "--runtime-endpoint",
        endpoint,
        "--image-endpoint",
        endpoint,
        "--timeout",
        "60s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CRI_CONFIG_FILE": os.devnull},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"crictl {' '.join(args)}: {err.decode(errors='replace')}"
    return out.decode()


@pytest.fixture
async def fake_endpoint(tmp_path: Path) -> AsyncIterator[str]:
    images = FakeImages()
    runtime = FakeRuntime(images)
    endpoint = f"unix://{tmp_path / 'fake.sock'}"
    runner = asyncio.create_task(runtime.run())
    try:
        async with serving(endpoint, runtime, images, grace=0.5):
            yield endpoint
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def _run_pod_with_envs(endpoint: str, image: str, work: Path) -> None:
    logs = work / "logs"
    logs.mkdir(mode=0o700)
    pod_json = work / "pod.json"
    pod_json.write_text(
        json.dumps(
            {
                "metadata": {"name": "crictl-env", "namespace": "interop", "uid": str(work)},
                "hostname": "crictl-env",
                "log_directory": str(logs),
                "linux": {},
            }
        )
    )
    container_json = work / "container.json"
    container_json.write_text(
        json.dumps(
            {
                "metadata": {"name": "app"},
                "image": {"image": image},
                "command": ["sh", "-c", 'echo "$PLAIN|$TEXT"; sleep 3600'],
                "envs": [{"key": k, "value": v} for k, v in ENVS.items()],
                "log_path": "app/0.log",
            }
        )
    )
    await crictl(endpoint, "pull", image)
    pod_id = (await crictl(endpoint, "runp", str(pod_json))).strip()
    try:
        cid = (await crictl(endpoint, "create", pod_id, str(container_json), str(pod_json))).strip()
        await crictl(endpoint, "start", cid)
        log = logs / "app" / "0.log"

        def echoed() -> str | None:
            lines = log.read_bytes().splitlines() if log.exists() else []
            return lines[0].split(b" ", 3)[3].decode() if lines else None

        expected = f"{ENVS['PLAIN']}|{ENVS['TEXT']}"
        assert await wait_until(echoed, message="the container's echo") == expected
        printed = await crictl(endpoint, "exec", "-s", cid, "sh", "-c", 'echo "$TEXT"')
        assert printed.rstrip("\n") == ENVS["TEXT"]  # crictl adds blank lines of its own
        inspected = json.loads(await crictl(endpoint, "inspect", cid))
        assert inspected["status"]["state"] == "CONTAINER_RUNNING"
    finally:
        await crictl(endpoint, "stopp", pod_id)
        await crictl(endpoint, "rmp", pod_id)


async def test_crictl_runs_a_container_with_envs_on_the_simulated_runtime(
    fake_endpoint: str, tmp_path: Path
) -> None:
    await _run_pod_with_envs(fake_endpoint, FAKE_IMAGE, tmp_path)


async def test_crictl_runs_a_container_with_envs_on_the_native_runtime(
    native_runtime: NativeRuntime, test_images: HarnessImages, tmp_path: Path
) -> None:
    work = tmp_path / "crictl"
    work.mkdir()
    await _run_pod_with_envs(native_runtime.endpoint, test_images.busybox, work)
    async with CRIClient(native_runtime.endpoint) as cri:  # nothing of the pod is left
        assert not [s for s in await cri.list_pod_sandbox() if s.metadata.name == "crictl-env"]
