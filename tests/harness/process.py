"""Waiting for the daemons the harness starts, and stopping them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from tests.harness.wait import WaitTimeout, wait_until_sync


def stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; nothing if already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class GaveUp(Exception):
    """Raised by a readiness check that knows the daemon will never be ready."""


def wait_ready(
    proc: subprocess.Popen[bytes],
    check: Callable[[], str | None],
    *,
    name: str,
    timeout: float,
    interval: float = 0.05,
) -> str | None:
    """Poll ``check`` (None: ready, else why not yet) while ``proc`` runs.

    None once ready; otherwise the reason it is not: the last answer when the time
    ran out, the daemon's exit, or what ``check`` gave up on.
    """
    last = "no attempt"

    def ready() -> bool:
        nonlocal last
        if proc.poll() is not None:
            raise GaveUp(f"{name} exited with code {proc.returncode}")
        reason = check()
        last = reason or last
        return reason is None

    try:
        wait_until_sync(ready, timeout=timeout, interval=interval, message=f"{name} to be ready")
    except GaveUp as exc:
        return str(exc)
    except WaitTimeout:
        return last
    return None
