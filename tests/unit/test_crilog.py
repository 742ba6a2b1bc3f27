"""The CRI log format, as runtimes write it and the kubelet reads it."""

from __future__ import annotations

import pytest

from minikubelet.logs.crilog import format_line, parse_line, rfc3339nano

NS = 1_764_312_748_123_456_789  # 2025-11-28T06:52:28.123456789Z


def test_rfc3339nano_drops_trailing_zeros_like_go() -> None:
    assert rfc3339nano(NS) == "2025-11-28T06:52:28.123456789Z"
    assert rfc3339nano(NS - 789) == "2025-11-28T06:52:28.123456Z"
    assert rfc3339nano(1_764_312_748_000_000_000) == "2025-11-28T06:52:28Z"


def test_round_trip() -> None:
    line = format_line(NS, "stderr", "boom: it broke")
    assert line == "2025-11-28T06:52:28.123456789Z stderr F boom: it broke\n"
    parsed = parse_line(line)
    assert (parsed.stream, parsed.partial, parsed.message) == ("stderr", False, "boom: it broke")
    partial = parse_line(format_line(NS, "stdout", "half a li", partial=True))
    assert partial.partial and partial.message == "half a li"


def test_empty_message_and_spaces_are_kept() -> None:
    assert parse_line("2025-11-28T06:52:28Z stdout F ").message == ""
    assert parse_line("2025-11-28T06:52:28Z stdout F  two  spaces ").message == " two  spaces "


@pytest.mark.parametrize(
    "bad", ["", "hello", "2025-11-28T06:52:28Z stdin F x", "2025-11-28 stdout F x"]
)
def test_malformed_lines_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="not a CRI log line"):
        parse_line(bad)
