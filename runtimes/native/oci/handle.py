"""What the native runtime keeps per container to drive it, and how a container ended.

Shared by the runc, conmon and exec halves of :mod:`runtimes.native.oci`; nothing
here runs a process.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runtimes.base.core import exit_reason

EXIT_SIGKILL: Final = 137
POLL_INTERVAL: Final = 0.02


@dataclass(frozen=True, slots=True)
class ContainerHandle:
    """What the server keeps per container to drive it; plain strings, so it persists as JSON."""

    id: str
    bundle: str  # holds config.json, conmon's ctl FIFO and pid files, persist/
    log_path: str  # the CRI log file conmon writes
    handler: str = ""  # "" = the runtime's default handler
    cgroups_path: str = ""  # linux.cgroupsPath of the spec
    name: str = ""
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False  # conmon closes stdin when the first attached client leaves

    @classmethod
    def from_spec(
        cls,
        *,
        id: str,
        bundle: str,
        log_path: str,
        spec: Mapping[str, Any],
        handler: str = "",
        name: str = "",
        stdin: bool = False,
        stdin_once: bool = False,
    ) -> ContainerHandle:
        return cls(
            id=id,
            bundle=bundle,
            log_path=log_path,
            handler=handler,
            cgroups_path=str(spec.get("linux", {}).get("cgroupsPath", "")),
            name=name,
            terminal=bool(spec.get("process", {}).get("terminal", False)),
            stdin=stdin,
            stdin_once=stdin_once,
        )

    @property
    def pidfile(self) -> Path:
        return Path(self.bundle, "pidfile")

    @property
    def conmon_pidfile(self) -> Path:
        return Path(self.bundle, "conmon.pid")

    @property
    def persist_dir(self) -> Path:
        return Path(self.bundle, "persist")

    @property
    def ctl_fifo(self) -> Path:
        return Path(self.bundle, "ctl")

    def exec_pidfile(self) -> Path:
        """A new pid file for one ``runc exec`` (the caller removes it)."""
        return Path(self.bundle, f"exec-{secrets.token_hex(6)}.pid")


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exit_code: int
    finished_at: int  # ns since the epoch: when conmon wrote the exit file
    oom_killed: bool = False

    @property
    def reason(self) -> str:
        """The CRI container status reason, as CRI-O gives it."""
        return exit_reason(self.exit_code, oom_killed=self.oom_killed)


def pid_alive(pid: int, needle: str) -> bool:
    """Whether ``pid`` runs (not a zombie) with ``needle`` in its command line. Blocks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rpartition(")")[2].split()[:1]
    if state == ["Z"]:
        return False
    return needle.encode() in cmdline


def read_int(path: Path) -> int | None:
    """The integer in a pid or exit file; None if it is absent or not (yet) one. Blocks."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None
