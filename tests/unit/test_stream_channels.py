"""The remotecommand channel codec and its status/resize messages."""

from __future__ import annotations

import json

import pytest

from minikubelet.streaming import channels as ch


@pytest.mark.parametrize(
    ("channel", "data", "wire"),
    [
        (ch.STREAM_STDIN, b"foo\n", bytes([0, 102, 111, 111, 10])),  # wsstream doc example
        (ch.STREAM_STDOUT, b"\n", bytes([1, 10])),
        (ch.STREAM_ERROR, b"", bytes([3])),
        (ch.STREAM_RESIZE, b"{}", b"\x04{}"),
    ],
)
def test_encode_decode(channel: int, data: bytes, wire: bytes) -> None:
    assert ch.encode(channel, data) == wire
    for proto in (ch.STREAM_PROTOCOL_V4, ch.STREAM_PROTOCOL_V5):
        assert ch.decode(wire, protocol=proto) == ch.ChannelMessage(channel, data)


def test_v5_close_signal() -> None:
    assert ch.encode_close(ch.STREAM_STDIN) == b"\xff\x00"
    assert ch.decode(b"\xff\x00") == ch.ChannelMessage(0, close=True)
    # Before v5, 255 is not a signal.
    assert ch.decode(b"\xff\x00", protocol=ch.STREAM_PROTOCOL_V4) == ch.ChannelMessage(255, b"\x00")


@pytest.mark.parametrize("wire", [b"", b"\xff", b"\xff\x00\x01"])
def test_bad_messages(wire: bytes) -> None:
    with pytest.raises(ch.ChannelError):
        ch.decode(wire)


@pytest.mark.parametrize("channel", [-1, 255, 256])
def test_bad_channel(channel: int) -> None:
    with pytest.raises(ch.ChannelError):
        ch.encode(channel, b"")


@pytest.mark.parametrize(
    ("code", "wire"),
    [
        (0, b'{"metadata":{},"status":"Success"}'),
        (
            3,
            b'{"metadata":{},"status":"Failure",'
            b'"message":"command terminated with non-zero exit code: exit status 3",'
            b'"reason":"NonZeroExitCode",'
            b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}',
        ),
    ],
)
def test_exit_status(code: int, wire: bytes) -> None:
    assert ch.exit_status(code) == wire
    assert ch.parse_exit_status(wire) == code


def test_exit_status_custom_message_and_plain_failure() -> None:
    obj = json.loads(ch.exit_status(137, "killed"))
    assert obj["message"] == "killed"
    assert obj["details"]["causes"] == [{"reason": "ExitCode", "message": "137"}]
    with pytest.raises(ch.ChannelError, match="no exit code"):
        ch.parse_exit_status(ch.error_status("container not found"))
    with pytest.raises(ch.ChannelError):
        ch.parse_exit_status(b"not json")


def test_resize() -> None:
    size = ch.TerminalSize(80, 24)
    assert size.encode() == b'{"Width":80,"Height":24}'
    assert ch.TerminalSize.decode(b'{"Width": 80, "Height": 24}') == size
    for bad in (b"{}", b"[]", b'{"Width":-1,"Height":2}', b"x"):
        with pytest.raises(ch.ChannelError):
            ch.TerminalSize.decode(bad)


def test_stream_types() -> None:
    assert ch.STREAM_TYPE_HEADER == "streamType"
    assert ch.CHANNEL_BY_STREAM_TYPE == {
        "stdin": 0,
        "stdout": 1,
        "stderr": 2,
        "error": 3,
        "resize": 4,
    }
    assert ch.SUPPORTED_STREAM_PROTOCOLS[:2] == ("v5.channel.k8s.io", "v4.channel.k8s.io")
