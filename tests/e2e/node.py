"""A real minikubelet node for end-to-end tests: ``minikubelet run`` as its own process.

The tests see the node as a person does: through the manifest directory they
write to, the local API (the same client ``minikubelet get/logs/exec`` use) and
the process's own output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from minikubelet.server.client import KubeletUnreachable, LocalClient
from tests.harness.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"

#: Shortened kubelet timings so crash loops and resyncs happen within a test's patience.
FAST = (
    "--crash-loop-initial",
    "1",
    "--crash-loop-max",
    "4",
    "--relist-period",
    "0.2",
    "--file-check-period",
    "1",
)


class Node:
    """One ``minikubelet run`` process with its own root dir and manifest directory."""

    def __init__(
        self,
        workdir: Path,
        *,
        runtime: str = "fake",
        node_name: str = "e2e",
        extra_args: tuple[str, ...] = FAST,
    ) -> None:
        self.workdir = workdir
        self.root_dir = workdir / "root"
        self.manifests = workdir / "manifests"
        self.runtime = runtime
        self.node_name = node_name
        self.extra_args = extra_args
        self.log_path = workdir / "kubelet.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.manifests.mkdir(parents=True, exist_ok=True)

    # -- process ---------------------------------------------------------------

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process below
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "minikubelet",
                "-v",
                "run",
                "--root-dir",
                str(self.root_dir),
                "--manifests",
                str(self.manifests),
                "--runtime",
                self.runtime,
                "--node-name",
                self.node_name,
                # the kubelet API's port only where a test asks for one
                *(() if "--port" in self.extra_args else ("--port", "0")),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> LocalClient:
        return LocalClient(self.root_dir / "kubelet.sock")

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the kubelet exited ({self.proc.returncode}):\n{self.log()}")
            async with self.client() as c:
                return (await c.healthz()) == "ok"

        await wait_until(
            up, timeout=timeout, message="the kubelet's local API", ignoring=(KubeletUnreachable,)
        )

    # -- manifests -------------------------------------------------------------

    def add_manifest(self, name: str, text: str | None = None) -> Path:
        """Copy ``manifests/<name>`` (or write ``text``) into the node's manifest directory."""
        target = self.manifests / name
        tmp = self.manifests / f".{name}.tmp"  # dotfiles are ignored: write, then rename
        if text is None:
            shutil.copyfile(MANIFESTS / name, tmp)
        else:
            tmp.write_text(text)
        os.replace(tmp, target)
        return target

    def remove_manifest(self, name: str) -> None:
        (self.manifests / name).unlink()

    def pod_name(self, name: str) -> str:
        return f"{name}-{self.node_name}"

    # -- observing ---------------------------------------------------------------

    async def pods(self) -> dict[str, dict[str, Any]]:
        async with self.client() as c:
            return {p["metadata"]["name"]: p for p in await c.pods()}

    async def pod(self, name: str) -> dict[str, Any] | None:
        return (await self.pods()).get(self.pod_name(name))

    async def wait_pod(
        self,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 30.0,
        what: str = "",
    ) -> dict[str, Any]:
        """Poll the local API until pod ``name`` satisfies ``check``."""
        last: dict[str, Any] | None = None

        async def probe() -> dict[str, Any] | None:
            nonlocal last
            last = await self.pod(name)
            return last if last is not None and check(last) else None

        try:
            return await wait_until(probe, timeout=timeout, message=what or f"pod {name}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; last seen: {last}\n--- kubelet log tail:\n{self.log()[-4000:]}"
            ) from None

    async def events(self) -> list[dict[str, Any]]:
        async with self.client() as c:
            return await c.events()


# -- reading pod status ------------------------------------------------------------


def phase(pod: dict[str, Any]) -> str:
    return str(pod.get("status", {}).get("phase", ""))


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status", {})
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key, []) or []:
            if cs.get("name") == name:
                return dict(cs)
    return {}


def condition(pod: dict[str, Any], kind: str) -> str:
    for c in pod.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return ""


def running(pod: dict[str, Any], *names: str) -> bool:
    return all("running" in container_status(pod, n).get("state", {}) for n in names)


@contextlib.asynccontextmanager
async def runtime_node(
    workdir: Path, endpoint: str, node_name: str, *, drain_timeout: float = 90.0
) -> AsyncIterator[Node]:
    """A node on a real runtime's endpoint; at the end its manifests are removed, its pods
    must all go, and neither the kubelet nor the runtime may hold a sandbox of it."""
    from minikubelet.cri.client import CRIClient

    node = Node(workdir, runtime=endpoint, node_name=node_name, extra_args=FAST)
    node.start()
    try:
        await node.wait_ready()
        yield node
        for manifest in node.manifests.glob("*.yaml"):
            manifest.unlink()

        async def empty() -> bool:
            return not await node.pods()

        await wait_until(empty, timeout=drain_timeout, message="the node to have no pods left")
        async with CRIClient(endpoint) as cri:
            ours = [
                s.metadata.name
                for s in await cri.list_pod_sandbox()
                if s.metadata.name.endswith(f"-{node_name}")
            ]
        assert ours == [], f"sandboxes left in the runtime: {ours}"
    finally:
        assert node.stop() == 0
        assert "Traceback" not in node.log(), node.log()[-4000:]
