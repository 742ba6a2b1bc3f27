"""What the end-to-end tests share beyond :mod:`tests.e2e.node`: events, the CLI, the trace,
and a watch on the runtime itself (what ``crictl`` would show a node's administrator)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import NotFound
from tests.e2e.node import FAST, ROOT, Node, condition, container_status
from tests.harness.wait import wait_until

POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"


def pod_manifest(name: str, spec: str) -> str:
    """A Pod manifest named ``name`` whose spec is ``spec`` (YAML, indented by two spaces)."""
    return f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}"


def traced(workdir: Path) -> tuple[str, ...]:
    """The fast node flags plus a CRI trace file (``workdir/trace.jsonl``)."""
    return (*FAST, "--trace-file", str(workdir / "trace.jsonl"))


def trace(workdir: Path, pod: str | None = None) -> list[dict[str, Any]]:
    """The CRI calls the kubelet made, oldest first (optionally only those about ``pod``)."""
    path = workdir / "trace.jsonl"
    if not path.exists():
        return []
    calls = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if pod is not None:
        calls = [c for c in calls if c.get("pod") == f"default/{pod}"]
    return calls


async def trace_through(workdir: Path, pod: str, method: str) -> list[dict[str, Any]]:
    """The trace about ``pod`` once it holds a ``method`` call (the file is written every
    0.2 s, a little behind the calls)."""

    async def written() -> list[dict[str, Any]] | None:
        calls = trace(workdir, pod)
        return calls if any(c["method"] == method for c in calls) else None

    return await wait_until(written, timeout=10, message=f"{method} in the trace")


async def pod_events(node: Node, name: str, uid: str | None = None) -> list[dict[str, Any]]:
    """The node's events about pod ``name`` (this UID only, when given), oldest first."""
    full = node.pod_name(name)
    return [
        e
        for e in await node.events()
        if e["involvedObject"].get("name") == full
        and (uid is None or e["involvedObject"].get("uid") == uid)
    ]


def reasons(events: list[dict[str, Any]]) -> list[str]:
    return [e["reason"] for e in events]


async def wait_gone(node: Node, name: str, timeout: float = 30.0) -> None:
    async def gone() -> bool | None:
        return True if await node.pod(name) is None else None

    await wait_until(gone, timeout=timeout, message=f"pod {name} to be gone")


def uid(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["uid"])


def state(pod: dict[str, Any], container: str) -> dict[str, Any]:
    return dict(container_status(pod, container).get("state", {}))


def waiting_reason(pod: dict[str, Any], container: str) -> str:
    return str(state(pod, container).get("waiting", {}).get("reason", ""))


def restarts(pod: dict[str, Any], container: str) -> int:
    return int(container_status(pod, container).get("restartCount", 0))


def ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready") == "True"


def when(stamp: str) -> datetime:
    """An RFC 3339 time from a status."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def cli(node: Node, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``minikubelet COMMAND --root-dir ROOT ARGS...`` as a person runs it, in its own
    process (the root dir goes right after the command, before any ``--``)."""
    command, *rest = args
    return subprocess.run(
        [sys.executable, "-m", "minikubelet", command, "--root-dir", str(node.root_dir), *rest],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


async def acli(node: Node, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """:func:`cli` without blocking the event loop."""
    return await asyncio.to_thread(cli, node, *args, timeout=timeout)


async def logs(node: Node, pod: str, container: str, **options: Any) -> str:
    async with node.client() as c:
        chunks = [
            chunk async for chunk in c.logs("default", node.pod_name(pod), container, **options)
        ]
    return b"".join(chunks).decode()


async def exec_in(node: Node, pod: str, container: str, *cmd: str) -> tuple[str, str, int]:
    async with node.client() as c:
        result = await c.exec("default", node.pod_name(pod), container, list(cmd), timeout=10)
    return result.stdout.decode(), result.stderr.decode(), result.exit_code


# -- the runtime's own view --------------------------------------------------------------


@dataclass
class Instance:
    """One container instance as the runtime reports it (times in seconds since the epoch)."""

    id: str
    pod_uid: str
    name: str
    attempt: int
    state: int
    created_at: float
    started_at: float
    finished_at: float
    exit_code: int


class RuntimeWatch:
    """Polls a CRI endpoint and remembers every container instance it ever saw, so instances
    the kubelet garbage-collects later are still known with their start and finish times."""

    def __init__(self, endpoint: str) -> None:
        self.cri = CRIClient(endpoint)
        self.seen: dict[str, Instance] = {}

    async def __aenter__(self) -> RuntimeWatch:
        await self.cri.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cri.close()

    async def poll(self) -> list[Instance]:
        """Refresh what the runtime holds now; returns the instances present."""
        present = []
        for item in await self.cri.list_containers():
            try:
                status = (await self.cri.container_status(item.id)).status
            except NotFound:
                continue
            inst = Instance(
                id=status.id,
                pod_uid=status.labels.get(POD_UID_LABEL, ""),
                name=status.labels.get(CONTAINER_NAME_LABEL, status.metadata.name),
                attempt=status.metadata.attempt,
                state=status.state,
                created_at=status.created_at / 1e9,
                started_at=status.started_at / 1e9,
                finished_at=status.finished_at / 1e9,
                exit_code=status.exit_code,
            )
            self.seen[inst.id] = inst
            present.append(inst)
        return present

    def instances(self, name: str, pod_uid: str | None = None) -> list[Instance]:
        """Every instance of container ``name`` seen so far, oldest first."""
        found = [
            i
            for i in self.seen.values()
            if i.name == name and (pod_uid is None or i.pod_uid == pod_uid)
        ]
        return sorted(found, key=lambda i: i.created_at)

    async def until(
        self, check: Callable[[RuntimeWatch], bool], *, timeout: float = 30.0, what: str = ""
    ) -> None:
        """Poll every 0.1 s until ``check(self)`` holds."""

        async def probe() -> bool | None:
            await self.poll()
            return True if check(self) else None

        await wait_until(probe, timeout=timeout, message=what or "the runtime", interval=0.1)

    async def running(self, pod_uid: str | None = None) -> list[Instance]:
        return [
            i
            for i in await self.poll()
            if i.state == pb.CONTAINER_RUNNING and (pod_uid is None or i.pod_uid == pod_uid)
        ]


def bundled_runtime(node: Node) -> str:
    """The endpoint of the simulated runtime ``minikubelet run --runtime fake`` started."""
    return f"unix://{node.root_dir / 'runtimes' / 'fake.sock'}"
