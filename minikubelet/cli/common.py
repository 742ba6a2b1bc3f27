"""What every command shares: running a coroutine as the command, errors as a person reads
them, and the defaults of a node's root dir, name and manifests."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeAlias

#: What a command group adds its parsers to.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

CHECKOUT_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def default_root_dir() -> Path:
    """/var/lib/minikubelet for root, the user's state directory otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/minikubelet")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "minikubelet"


def default_manifests() -> Path | None:
    """The project's manifests/ when run from a checkout."""
    return CHECKOUT_MANIFESTS if CHECKOUT_MANIFESTS.is_dir() else None


def default_node_name() -> str:
    return socket.gethostname().split(".")[0].lower() or "minikubelet"


def run_command(main: Coroutine[Any, Any, int | None]) -> int:
    """Run ``main``; SIGINT/SIGTERM cancel it, which is a clean exit."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return (await main) or 0
        except asyncio.CancelledError:
            return 0

    return asyncio.run(guarded())


def leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (possibly nested) exception groups, as a person wants to read them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def run_reporting(
    name: str, main: Coroutine[Any, Any, int | None], expected: tuple[type[BaseException], ...]
) -> int:
    """Run ``main`` as the command ``name``; errors of the ``expected`` kinds (also inside
    exception groups) are printed one a line as ``minikubelet NAME: ...``, exit code 1."""
    catch: tuple[type[BaseException], ...] = (*expected, ExceptionGroup)
    try:
        return run_command(main)
    except catch as exc:
        errors = leaves(exc)
        if not all(isinstance(e, expected) for e in errors):
            raise
        for error in errors:
            print(f"minikubelet {name}: {error}", file=sys.stderr)
        return 1
