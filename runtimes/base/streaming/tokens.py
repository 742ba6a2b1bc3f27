"""Single-use tokens: what an RPC validated, waiting for its client behind a URL.

The token is random, single use and short lived (a minute, as upstream's
request cache); at most :data:`MAX_IN_FLIGHT` unused ones are held.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from minikubelet.errors import Unavailable

TOKEN_TTL = 60.0  # seconds a URL stays usable (upstream's CacheTTL)
MAX_IN_FLIGHT = 1000  # unused tokens held at once (upstream's maxInFlight)


@dataclass
class StreamRequest:
    """What an RPC validated, waiting for its client behind a token."""

    kind: str  # exec, attach, portforward
    target: str  # container id, or sandbox id for portforward
    cmd: tuple[str, ...] = ()
    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    ports: tuple[int, ...] = ()
    expires: float = 0.0


class TokenCache:
    """Tokens in, requests out: each token is good for one connection before it expires."""

    def __init__(
        self,
        *,
        ttl: float = TOKEN_TTL,
        max_in_flight: int = MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_in_flight
        self._clock = clock
        self._pending: dict[str, StreamRequest] = {}

    def issue(self, request: StreamRequest) -> str:
        """A fresh token for ``request``; Unavailable while too many are unused."""
        now = self._clock()
        for token in [t for t, r in self._pending.items() if r.expires <= now]:
            del self._pending[token]
        if len(self._pending) >= self._max:
            raise Unavailable(f"too many streaming requests in flight ({self._max})")
        token = secrets.token_urlsafe(8)
        request.expires = now + self._ttl
        self._pending[token] = request
        return token

    def consume(self, kind: str, token: str) -> StreamRequest | None:
        """The request behind ``token`` if it is of ``kind`` and alive; the token is spent."""
        request = self._pending.pop(token, None)
        if request is None or request.kind != kind or request.expires <= self._clock():
            return None
        return request
