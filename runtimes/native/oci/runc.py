"""The OCI runtime's command line (runc, or crun, by handler): every ``runc`` call but exec.

Each handler names a binary, found on PATH once and then kept as an absolute
path (conmon execs the runtime without a PATH search), and has a state root of
its own, ``<root>/state/<handler>`` (the runtime's ``--root``). A call is one
run-to-completion subprocess through :func:`minikubelet.util.proc.run`, with
the runtime's command timeout (DeadlineExceeded past it, the process killed);
a failure's message is runc's logrus ``msg="..."``, or its stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from minikubelet.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from minikubelet.util import proc
from runtimes.native.oci.handle import ContainerHandle

log = logging.getLogger(__name__)

DEFAULT_HANDLERS: Final[Mapping[str, str]] = {"runc": "runc", "crun": "crun"}
_RUNC_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class OCIState:
    """``runc state``: status is created, running, paused or stopped."""

    id: str
    status: str
    pid: int
    bundle: str
    created: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OCIState:
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            pid=int(data.get("pid") or 0),
            bundle=str(data.get("bundle", "")),
            created=str(data.get("created", "")),
        )


def runc_message(stderr: bytes) -> str:
    """The error an OCI runtime printed: runc's logrus ``msg="..."``, else the text."""
    text = stderr.decode(errors="replace")
    found: list[str] = _RUNC_MSG.findall(text)
    if found:
        return found[-1].replace('\\"', '"').replace("\\\\", "\\")
    return text.strip()


def is_gone(message: str) -> bool:
    """Whether an OCI runtime's error says it does not know the container (runc, crun)."""
    return "does not exist" in message or "No such file or directory" in message


class Runc:
    """The OCI runtime binaries by handler, and the commands run on a container's id."""

    def __init__(
        self,
        *,
        root: Path,
        handlers: Mapping[str, str] = DEFAULT_HANDLERS,
        default_handler: str = "runc",
        command_timeout: float = 30.0,
    ) -> None:
        self.root = root
        self.handlers = dict(handlers)
        self.default_handler = default_handler
        self.command_timeout = command_timeout
        self._resolved: dict[str, str] = {}

    # -- handlers and binaries -------------------------------------------------------------

    def handler_name(self, handler: str) -> str:
        name = handler or self.default_handler
        if name not in self.handlers:
            raise InvalidArgument(f"unknown runtime handler {name!r}")
        return name

    def state_root(self, handler: str = "") -> Path:
        return self.root / "state" / self.handler_name(handler)

    def which(self, program: str) -> str | None:
        """An absolute path (conmon execs the runtime without a PATH search); cached once found."""
        found = self._resolved.get(program)
        if found is None:
            path = shutil.which(program)
            if path is None:
                return None
            found = self._resolved[program] = os.path.abspath(path)
        return found

    def binary(self, handler: str = "") -> str:
        name = self.handler_name(handler)
        path = self.which(self.handlers[name])
        if path is None:
            raise Unavailable(f"OCI runtime {self.handlers[name]!r} (handler {name}) not found")
        return path

    def argv(self, handler: str, *args: str) -> list[str]:
        """A command line of the handler's runtime on its state root."""
        return [self.binary(handler), "--root", str(self.state_root(handler)), *args]

    # -- commands --------------------------------------------------------------------------

    async def run(self, handler: str, *args: str) -> tuple[int, str, bytes]:
        """Exit code, runc's message when it failed, and stdout. DeadlineExceeded past the
        command timeout."""
        argv = self.argv(handler, *args)
        try:
            done = await proc.run(argv, timeout=self.command_timeout, check=False)
        except proc.CommandTimeout:
            raise DeadlineExceeded(f"{argv[0]} {args[0]} timed out") from None
        rc = done.returncode
        return rc, runc_message(done.stderr) if rc else "", done.stdout

    async def start(self, handle: ContainerHandle) -> None:
        rc, message, _ = await self.run(handle.handler, "start", handle.id)
        if rc == 0:
            log.info("started container %s", handle.id)
            return
        if is_gone(message):
            raise NotFound(f"container {handle.id}: {message}")
        if "cannot start" in message:
            raise FailedPrecondition(f"container {handle.id}: {message}")
        raise Internal(f"starting container {handle.id}: {message}")

    async def state(self, handle: ContainerHandle) -> OCIState | None:
        """The OCI runtime's view of the container; None when it does not know it."""
        rc, message, out = await self.run(handle.handler, "state", handle.id)
        if rc == 0:
            return OCIState.from_json(json.loads(out))
        if is_gone(message):
            return None
        raise Internal(f"state of container {handle.id}: {message}")

    async def list_containers(self, handler: str = "") -> list[OCIState]:
        """Every container the handler's state root knows (for recovery after a restart)."""
        rc, message, out = await self.run(handler, "list", "--format", "json")
        if rc != 0:
            raise Internal(f"listing containers: {message}")
        return [OCIState.from_json(c) for c in json.loads(out or b"null") or []]

    async def kill(
        self,
        handle: ContainerHandle,
        sig: int = signal.SIGTERM,
        *,
        all_processes: bool = False,
    ) -> bool:
        """Signal the container (every process of its cgroup with ``all_processes``).

        False when it is not running (already stopped, or unknown).
        """
        args = ["kill", *(["--all"] if all_processes else []), handle.id, str(int(sig))]
        rc, message, _ = await self.run(handle.handler, *args)
        if rc == 0:
            log.info("signalled container %s with %s", handle.id, signal.Signals(sig).name)
            return True
        if "not running" in message or is_gone(message):
            return False
        raise Internal(f"killing container {handle.id}: {message}")

    async def delete(self, handle: ContainerHandle) -> None:
        """``runc delete --force`` (killing it if it runs). Idempotent: an unknown container
        is deleted already; any other failure is Internal with runc's message."""
        rc, message, _ = await self.run(handle.handler, "delete", "--force", handle.id)
        if rc != 0 and not is_gone(message):
            raise Internal(f"deleting container {handle.id}: {message}")
