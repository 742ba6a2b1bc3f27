"""Endpoints are spelled as the kubelet's --container-runtime-endpoint spells them."""

from __future__ import annotations

import pytest

from minikubelet.cri.endpoint import InvalidEndpoint, parse_endpoint


def test_forms() -> None:
    assert parse_endpoint("unix:///run/x.sock").grpc_target == "unix:///run/x.sock"
    assert str(parse_endpoint("/run/x.sock")) == "unix:///run/x.sock"
    tcp = parse_endpoint("tcp://127.0.0.1:9000")
    assert (tcp.scheme, tcp.grpc_target, str(tcp)) == (
        "tcp",
        "127.0.0.1:9000",
        "tcp://127.0.0.1:9000",
    )


@pytest.mark.parametrize(
    "bad",
    [
        "unix://relative.sock",
        "tcp://127.0.0.1",
        "tcp://:90",
        "tcp://h:99999",
        "x.sock",
        "http://127.0.0.1:9000",
    ],
)
def test_bad_endpoints_say_what_is_expected(bad: str) -> None:
    with pytest.raises(InvalidEndpoint, match=r"unix|tcp"):
        parse_endpoint(bad)
