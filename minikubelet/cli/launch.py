"""Starting a runtime that ships with minikubelet as its own process, as a node runs one."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

BUNDLED_RUNTIMES = ("fake", "native", "docker")
#: Runtimes whose containers end with the runtime process (nothing outlives it).
EPHEMERAL_RUNTIMES = ("fake",)
READY_TIMEOUT = 30.0


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
