"""The HTTP/1.1 that an upgrade needs: one request or response head, read and written.

Streaming connections speak HTTP only until ``101 Switching Protocols``; after
that the same socket carries SPDY or WebSocket frames. So this reads exactly
one head (whatever follows stays in the reader) and never a body.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

#: The longest head accepted (asyncio's default stream limit is 64 KiB).
MAX_HEAD = 32 * 1024


class HeadError(ValueError):
    """Not a well-formed HTTP/1.1 head."""


@dataclass
class Head:
    """A request (``method``, ``target``) or response (``status``, ``reason``) head."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated lists split, in order."""
        lname = name.lower()
        values: list[str] = []
        for key, value in self.headers:
            if key.lower() == lname:
                values += [v.strip() for v in value.split(",") if v.strip()]
        return values

    def get(self, name: str, default: str = "") -> str:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value.strip()
        return default

    @property
    def request(self) -> tuple[str, str]:
        """(method, target) of a request line."""
        parts = self.start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HeadError(f"bad request line {self.start!r}")
        return parts[0], parts[1]

    @property
    def status(self) -> int:
        """The status code of a response line."""
        parts = self.start.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HeadError(f"bad status line {self.start!r}")
        return int(parts[1])


async def read_head(reader: asyncio.StreamReader) -> Head:
    """One head, up to and including the blank line; IncompleteReadError at EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HeadError("head too long") from None
    if len(raw) > MAX_HEAD:
        raise HeadError("head too long")
    try:
        text = raw.decode("iso-8859-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HeadError("undecodable head") from None
    lines = text[:-4].split("\r\n")
    head = Head(lines[0], raw=raw)
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HeadError(f"bad header line {line!r}")
        head.headers.append((name, value.strip()))
    return head


def render(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A head (and a small body, with its Content-Length when there is one)."""
    lines = [start, *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1") + body
