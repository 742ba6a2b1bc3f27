"""CRI endpoints: ``unix:///run/x.sock``, ``tcp://127.0.0.1:9000``, or a bare socket path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: What the kubelet and the bundled runtimes allow per CRI message (both directions).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class InvalidEndpoint(ValueError):
    """An endpoint string we cannot reach; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "unix" or "tcp"
    address: str  # a socket path, or host:port

    @property
    def grpc_target(self) -> str:
        """The target string grpc channels and servers understand."""
        if self.scheme == "unix":
            return f"unix://{self.address}"
        return self.address

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.address}"
        return f"tcp://{self.address}"


def parse_endpoint(text: str) -> Endpoint:
    """Parse an endpoint the way kubelet's ``--container-runtime-endpoint`` reads it."""
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise InvalidEndpoint(f"{text!r}: a unix endpoint needs an absolute path")
        return Endpoint("unix", path)
    if text.startswith("tcp://"):
        hostport = text[len("tcp://") :]
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidEndpoint(f"{text!r}: a tcp endpoint is tcp://HOST:PORT")
        return Endpoint("tcp", hostport)
    if text.startswith("/"):
        return Endpoint("unix", text)
    raise InvalidEndpoint(f"{text!r}: expected unix:///PATH or tcp://HOST:PORT")
