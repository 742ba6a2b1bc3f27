"""Kubernetes remotecommand channel codec and messages (WebSocket and SPDY).

Over WebSocket (``v4.channel.k8s.io``, ``v5.channel.k8s.io``) each binary message
starts with one byte naming the channel: 0 stdin, 1 stdout, 2 stderr, 3 error,
4 resize. v5 adds a CLOSE signal: the message ``[255, channel]`` half-closes that
channel. Over SPDY each of these is its own stream, named by the ``streamType``
header. The error channel carries a ``metav1.Status`` (v4+), the resize channel
JSON ``{"Width": w, "Height": h}`` objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Subprotocol names (offered via Sec-WebSocket-Protocol / X-Stream-Protocol-Version).
STREAM_PROTOCOL_V1 = "channel.k8s.io"
STREAM_PROTOCOL_V2 = "v2.channel.k8s.io"
STREAM_PROTOCOL_V3 = "v3.channel.k8s.io"
STREAM_PROTOCOL_V4 = "v4.channel.k8s.io"
STREAM_PROTOCOL_V5 = "v5.channel.k8s.io"
PORT_FORWARD_PROTOCOL_V1 = "portforward.k8s.io"
#: Newest first, as Kubernetes offers them.
SUPPORTED_STREAM_PROTOCOLS = (
    STREAM_PROTOCOL_V5,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
)

# Channel numbers (the first three match the POSIX file descriptors).
STREAM_STDIN = 0
STREAM_STDOUT = 1
STREAM_STDERR = 2
STREAM_ERROR = 3
STREAM_RESIZE = 4
STREAM_CLOSE = 255

# SPDY stream headers and stream types.
STREAM_TYPE_HEADER = "streamType"
PORT_HEADER = "port"
PORT_FORWARD_REQUEST_ID_HEADER = "requestID"
STREAM_TYPE_STDIN = "stdin"
STREAM_TYPE_STDOUT = "stdout"
STREAM_TYPE_STDERR = "stderr"
STREAM_TYPE_ERROR = "error"
STREAM_TYPE_RESIZE = "resize"
STREAM_TYPE_DATA = "data"  # port-forward payload stream

#: SPDY stream type to WebSocket channel number.
CHANNEL_BY_STREAM_TYPE = {
    STREAM_TYPE_STDIN: STREAM_STDIN,
    STREAM_TYPE_STDOUT: STREAM_STDOUT,
    STREAM_TYPE_STDERR: STREAM_STDERR,
    STREAM_TYPE_ERROR: STREAM_ERROR,
    STREAM_TYPE_RESIZE: STREAM_RESIZE,
}

NON_ZERO_EXIT_CODE_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE_TYPE = "ExitCode"


class ChannelError(ValueError):
    """A malformed channel message."""


@dataclass(frozen=True)
class ChannelMessage:
    """A decoded WebSocket message; ``close`` marks a v5 CLOSE signal for ``channel``."""

    channel: int
    data: bytes = b""
    close: bool = False


def _check_channel(channel: int) -> None:
    if not 0 <= channel < STREAM_CLOSE:
        raise ChannelError(f"channel {channel} not in 0..254")


def encode(channel: int, data: bytes) -> bytes:
    """One binary WebSocket message carrying ``data`` on ``channel``."""
    _check_channel(channel)
    return bytes((channel,)) + data


def encode_close(channel: int) -> bytes:
    """The v5 CLOSE signal half-closing ``channel``."""
    _check_channel(channel)
    return bytes((STREAM_CLOSE, channel))


def decode(message: bytes, *, protocol: str = STREAM_PROTOCOL_V5) -> ChannelMessage:
    """Split a binary WebSocket message into channel and payload.

    Under v5 a message on channel 255 is a CLOSE signal and must be exactly two
    bytes; under earlier versions 255 is just another (reserved) channel number.
    """
    if not message:
        raise ChannelError("empty message has no channel byte")
    channel = message[0]
    if channel == STREAM_CLOSE and protocol == STREAM_PROTOCOL_V5:
        if len(message) != 2:
            raise ChannelError(f"CLOSE signal must be 2 bytes, got {len(message)}")
        return ChannelMessage(message[1], close=True)
    return ChannelMessage(channel, bytes(message[1:]))


def _dumps(obj: Any) -> bytes:
    # Go's encoding/json: no spaces, struct field order.
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def exit_status(exit_code: int, message: str | None = None) -> bytes:
    """The v4+ error-channel ``metav1.Status`` for a finished command.

    Field order and the empty ``metadata`` match Go's ``json.Marshal(metav1.Status)``.
    """
    if exit_code == 0:
        return _dumps({"metadata": {}, "status": "Success"})
    if message is None:
        message = f"command terminated with non-zero exit code: exit status {exit_code}"
    return _dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": NON_ZERO_EXIT_CODE_REASON,
            "details": {"causes": [{"reason": EXIT_CODE_CAUSE_TYPE, "message": str(exit_code)}]},
        }
    )


def error_status(message: str) -> bytes:
    """A v4+ ``Failure`` status for an error that is not an exit code."""
    return _dumps({"metadata": {}, "status": "Failure", "message": message})


def parse_exit_status(data: bytes) -> int:
    """The exit code an error-channel status reports (0 for Success).

    Raises :class:`ChannelError` for a failure that carries no exit code.
    """
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise ChannelError(f"status is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ChannelError("status is not a JSON object")
    if obj.get("status") == "Success":
        return 0
    if obj.get("reason") == NON_ZERO_EXIT_CODE_REASON:
        details = obj.get("details") or {}
        for cause in details.get("causes") or []:
            if isinstance(cause, dict) and cause.get("reason") == EXIT_CODE_CAUSE_TYPE:
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    break
    raise ChannelError(f"status carries no exit code: {obj.get('message', '')!r}")


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int

    def encode(self) -> bytes:
        """The resize-channel message, ``{"Width":w,"Height":h}``."""
        return _dumps({"Width": self.width, "Height": self.height})

    @classmethod
    def decode(cls, data: bytes) -> TerminalSize:
        try:
            obj = json.loads(data)
            width, height = obj["Width"], obj["Height"]
        except (ValueError, TypeError, KeyError) as e:
            raise ChannelError(f"bad resize message {data!r}: {e}") from None
        if not (isinstance(width, int) and isinstance(height, int)) or width < 0 or height < 0:
            raise ChannelError(f"bad resize message {data!r}")
        return cls(width, height)
