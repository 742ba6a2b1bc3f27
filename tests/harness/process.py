"""Waiting for the daemons the harness starts, and stopping them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


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
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"{name} exited with code {proc.returncode}"
        try:
            reason = check()
        except GaveUp as exc:
            return str(exc)
        if reason is None:
            return None
        last = reason
        time.sleep(interval)
    return last
