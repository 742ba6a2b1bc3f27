"""Starting a runtime that ships with minikubelet as its own process, as a node runs one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT = 30.0


def _no_state_args(root: Path) -> list[str]:
    return []


def _native_state_args(root: Path) -> list[str]:
    """The native runtime keeps its state beside the node's, its run root in /run."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return ["--root", str(root / "native"), "--run-root", f"/run/minikubelet/native-{tag}"]


@dataclass(frozen=True, slots=True)
class Bundled:
    """A runtime that ships with minikubelet, as a node starts it."""

    name: str
    #: Its containers end with its process (nothing outlives it).
    ephemeral: bool = False
    #: Where it keeps its state for a node whose root dir is the argument.
    state_args: Callable[[Path], list[str]] = _no_state_args


BUNDLED: dict[str, Bundled] = {
    "fake": Bundled("fake", ephemeral=True),
    "native": Bundled("native", state_args=_native_state_args),
    "docker": Bundled("docker"),
}
BUNDLED_RUNTIMES = tuple(BUNDLED)


@dataclass(frozen=True, slots=True)
class NodeRuntime:
    """The runtime a node runs on: its CRI endpoint, and whether its containers outlive it."""

    endpoint: str
    ephemeral: bool = False


@contextlib.asynccontextmanager
async def node_runtime(
    runtime: str, root: Path, *, extra_args: Sequence[str] = ()
) -> AsyncIterator[NodeRuntime]:
    """A bundled runtime (started for the node, stopped with it) or a CRI endpoint as given."""
    bundled = BUNDLED.get(runtime)
    if bundled is None:
        yield NodeRuntime(runtime)
        return
    args = [*bundled.state_args(root), *extra_args]
    async with bundled_runtime(bundled.name, root / "runtimes", extra_args=args) as endpoint:
        yield NodeRuntime(endpoint, ephemeral=bundled.ephemeral)


class LaunchError(RuntimeError):
    """The runtime did not come up; the message says why and what to do."""


@contextlib.asynccontextmanager
async def bundled_runtime(
    name: str, socket_dir: Path, *, extra_args: Sequence[str] = ()
) -> AsyncIterator[str]:
    """Run ``minikubelet runtime serve NAME`` on a socket in ``socket_dir``; yields its endpoint.

    The runtime is stopped (SIGTERM, then SIGKILL) when the context ends.
    """
    if name not in BUNDLED_RUNTIMES:
        raise LaunchError(
            f"runtime {name!r} is not available: choose one of {', '.join(BUNDLED_RUNTIMES)}"
            " or give a CRI endpoint as unix:///PATH"
        )
    await asyncio.to_thread(socket_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
    endpoint = f"unix://{socket_dir / f'{name}.sock'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "minikubelet",
        "runtime",
        "serve",
        name,
        "--listen",
        endpoint,
        *extra_args,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = await proc.stdout.readline()
        except TimeoutError:
            line = b""
        if b"serving" not in line:
            if proc.returncode is None:
                proc.terminate()
            code = await proc.wait()
            raise LaunchError(
                f"the {name} runtime did not start (exit code {code}); its message is above"
            )
        yield endpoint
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
