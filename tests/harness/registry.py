"""A throwaway local OCI registry: Debian's ``docker-registry`` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.harness.process import stop_process, wait_ready

REGISTRY_BINARY = "docker-registry"
READY_TIMEOUT = 30.0


# The access log is Apache's combined format, e.g.
# 127.0.0.1 - - [28/Nov/2026:07:28:34 +0000] "HEAD /v2/library/busybox/manifests/1.36 HTTP/1.1" 200
#   405 "" "containerd/1.6.20~ds1"
_ACCESS_LINE = re.compile(
    r'^(?P<client>\S+) \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" '
    r'(?P<status>\d{3}) \S+ "[^"]*" "(?P<agent>[^"]*)"',
    re.MULTILINE,
)


@dataclass(frozen=True)
class AccessLogEntry:
    """One request the registry served."""

    client: str
    method: str
    path: str
    status: int
    user_agent: str


class RegistryError(RuntimeError):
    """The registry could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file (or a note if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def http_get(host: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``http://host/path`` (host must be on 127.0.0.0/8); return (status, body)."""
    hostname, _, port = host.rpartition(":")
    if not hostname.startswith("127."):
        raise ValueError(f"refusing to contact non-loopback host {host!r}")
    conn = http.client.HTTPConnection(hostname, int(port), timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class LocalRegistry:
    """A ``docker-registry serve`` process storing blobs in its own directory."""

    def __init__(self, workdir: Path | None = None, binary: str = REGISTRY_BINARY) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="minikubelet-registry-"))
        self.binary = binary
        self.port = 0
        self.log_path = self.workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the running registry."""
        if not self.port:
            raise RegistryError("registry not started")
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: info\n"
            "  accesslog:\n"
            "    disabled: false\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {storage}\n"
            "  delete:\n"
            "    enabled: true\n"
            "  cache:\n"
            "    blobdescriptor: inmemory\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
            "  headers:\n"
            "    X-Content-Type-Options: [nosniff]\n"
        )
        return config

    def requests(self) -> list[AccessLogEntry]:
        """Every request in the access log so far (combined log format lines)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [
            AccessLogEntry(m["client"], m["method"], m["path"], int(m["status"]), m["agent"])
            for m in _ACCESS_LINE.finditer(text)
        ]

    def start(self, timeout: float = READY_TIMEOUT) -> LocalRegistry:
        """Start the registry and wait until ``GET /v2/`` answers 200."""
        binary = shutil.which(self.binary)
        if binary is None:
            raise RegistryError(f"{self.binary} not found (Debian package docker-registry)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self._write_config()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        last_error = wait_ready(self._proc, self._not_ready, name="registry", timeout=timeout)
        if last_error is None:
            return self
        tail = log_tail(self.log_path)
        self.close()
        raise RegistryError(
            f"registry on {self.host} not ready after {timeout}s ({last_error}); log tail:\n{tail}"
        )

    def _not_ready(self) -> str | None:
        try:
            status, _ = http_get(self.host, "/v2/")
        except OSError as exc:
            return str(exc)
        return None if status == 200 else f"GET /v2/ returned {status}"

    def close(self) -> None:
        """Stop the registry (terminate, then kill) and remove its files if we made them."""
        proc, self._proc = self._proc, None
        stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.close()
