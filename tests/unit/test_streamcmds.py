"""The port mappings `minikubelet port-forward` takes, and the ones it refuses."""

from __future__ import annotations

import pytest

from minikubelet.cli.stream import parse_port_mapping
from minikubelet.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8080:80", (8080, 80)), ("80", (80, 80)), (":80", (0, 80)), ("0:80", (0, 80))],
)
def test_port_mappings(text: str, expected: tuple[int, int]) -> None:
    assert parse_port_mapping(text) == expected


@pytest.mark.parametrize("text", ["http", "8080:", "80:0", "70000:80", "80:70000", "-1:80", ""])
def test_bad_port_mappings_say_which(text: str) -> None:
    with pytest.raises(InvalidArgument, match=f"invalid port mapping {text!r}"):
        parse_port_mapping(text)
