"""Image references are read the way Docker and containerd read them."""

from __future__ import annotations

import pytest

from minikubelet.reference import InvalidReference, is_digest, parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("someone/app", "docker.io/someone/app:latest"),
        ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
        ("127.0.0.1:5000/busybox:1.35", "127.0.0.1:5000/busybox:1.35"),
        ("localhost/app", "localhost/app:latest"),
        ("quay.io/org/app/sub:v1.2_3-x", "quay.io/org/app/sub:v1.2_3-x"),
        (f"quay.io/org/app@{DIGEST}", f"quay.io/org/app@{DIGEST}"),
        (f"app:1@{DIGEST}", f"docker.io/library/app:1@{DIGEST}"),
        ("a__b-c/d.e", "docker.io/a__b-c/d.e:latest"),
    ],
)
def test_normalisation(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" busybox", "whitespace"),
        ("Busybox", "lowercase"),
        ("a b", "not a valid image reference"),
        ("app:", "not a valid image reference"),
        ("app@sha256:1234", "not a valid image reference"),
        ("app:" + "x" * 129, "not a valid image reference"),
        ("a" * 64, "image ID"),
        (DIGEST, "image ID"),
        ("-app", "not a valid image reference"),
        ("a__b.c/app", "not a valid registry host"),
    ],
)
def test_bad_references_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse(text)


def test_parts_and_familiar_name() -> None:
    ref = parse("busybox:1.36")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (
        "docker.io",
        "library/busybox",
        "1.36",
        "",
    )
    assert ref.familiar_name == "busybox"
    assert parse("127.0.0.1:5000/x/y").familiar_name == "127.0.0.1:5000/x/y"
    assert str(ref.with_digest(DIGEST)) == f"docker.io/library/busybox@{DIGEST}"
    assert is_digest(DIGEST) and not is_digest("sha256:abc")
