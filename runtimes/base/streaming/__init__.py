"""The CRI streaming server the bundled runtimes share: exec, attach and port-forward.

CRI ``Exec``, ``Attach`` and ``PortForward`` do not carry the streams: they
return a URL of this server, ``http://ADDR/{exec,attach,portforward}/TOKEN``.
The client (crictl, the kubelet for kubectl, ``minikubelet exec``) then
upgrades an HTTP connection at that URL to SPDY/3.1 or WebSocket. The modules:

* :mod:`.tokens`: the single-use, short-lived tokens behind the URLs;
* :mod:`.server`: :class:`StreamingServer`, the RPC side and the HTTP side
  (accepting connections, routing ``/exec``, ``/attach``, ``/portforward``,
  choosing the upgrade);
* :mod:`.spdy` and :mod:`.websocket`: the two transports;
* :mod:`.remotecommand`: exec and attach over either transport's channels
  (stdio, resize, the exit status);
* :mod:`.portforward`: port-forward over either transport;
* :mod:`.connection`: what they share (HTTP error replies, the idle timeout).
"""

from runtimes.base.streaming.server import (
    DEFAULT_STREAMING_ADDRESS,
    HEAD_TIMEOUT,
    STREAM_CREATION_TIMEOUT,
    STREAM_IDLE_TIMEOUT,
    StreamingServer,
)
from runtimes.base.streaming.tokens import MAX_IN_FLIGHT, TOKEN_TTL

__all__ = [
    "DEFAULT_STREAMING_ADDRESS",
    "HEAD_TIMEOUT",
    "MAX_IN_FLIGHT",
    "STREAM_CREATION_TIMEOUT",
    "STREAM_IDLE_TIMEOUT",
    "TOKEN_TTL",
    "StreamingServer",
]
