"""A proxy on 127.0.0.1 that refuses every request and remembers what was asked of it.

The harness points containerd's ``HTTP_PROXY``/``HTTPS_PROXY`` at it. Go's
``http.ProxyFromEnvironment`` never proxies loopback addresses, so pulls from the
local registry go straight there, while any attempt to reach a host elsewhere (say
``registry-1.docker.io``) arrives here instead: it is answered ``403``, recorded,
and never becomes a DNS lookup or a connection off the machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#: Tests may aim at hosts under this reserved TLD (RFC 2606) to prove the trap works:
#: such attempts are expected, any other is a leak.
CANARY_SUFFIX = ".invalid"


def target_host(request_line: str) -> str:
    """The host a proxy request names: ``CONNECT h:443 ...`` or ``GET http://h/... ...``."""
    parts = request_line.split()
    if len(parts) < 2:
        return ""
    target = parts[1].split("://", 1)[-1].split("/", 1)[0]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


class EgressTrap:
    """A refusing HTTP proxy on 127.0.0.1; ``attempts`` lists the request lines it got."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._attempts: list[str] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, for ``HTTP_PROXY`` and ``HTTPS_PROXY``."""
        if self._sock is None:
            raise RuntimeError("egress trap not started")
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def attempts(self) -> list[str]:
        """The first line of every request made through the trap (``CONNECT host:443 ...``)."""
        with self._lock:
            return list(self._attempts)

    def unexpected(self) -> list[str]:
        """The attempts at hosts other than canaries (``*.invalid``)."""
        return [a for a in self.attempts if not target_host(a).endswith(CANARY_SUFFIX)]

    def proxy_env(self) -> dict[str, str]:
        """Environment variables that send a Go program's non-loopback HTTP(S) here."""
        return {
            "HTTP_PROXY": self.url,
            "HTTPS_PROXY": self.url,
            "http_proxy": self.url,
            "https_proxy": self.url,
            "NO_PROXY": "",
            "no_proxy": "",
        }

    def start(self) -> EgressTrap:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="egress-trap", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                head = b""
                with contextlib.suppress(OSError):
                    while b"\r\n" not in head and len(head) < 8192:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                with self._lock:
                    self._attempts.append(line or "<connection without a request>")
                with contextlib.suppress(OSError):
                    conn.sendall(_REFUSAL)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> EgressTrap:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
