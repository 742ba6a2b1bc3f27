"""Kubernetes quantities: parsing (table), rounding helpers, request defaulting."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from minikubelet.resources import (
    bytes_,
    ceil_div,
    milli_cpu,
    parse_quantity,
    requests_and_limits,
    resource_list,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Fraction(0)),
        ("1", Fraction(1)),
        ("100m", Fraction(1, 10)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("+2", Fraction(2)),
        ("-1", Fraction(-1)),
        ("007", Fraction(7)),
        ("250u", Fraction(250, 10**6)),
        ("5n", Fraction(5, 10**9)),
        ("1k", Fraction(1000)),
        ("1M", Fraction(10**6)),
        ("1G", Fraction(10**9)),
        ("1.G", Fraction(10**9)),
        ("2T", Fraction(2 * 10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),
        ("1Ki", Fraction(1024)),
        ("1Mi", Fraction(1024**2)),
        ("1.5Gi", Fraction(3 * 1024**3, 2)),
        ("1Ti", Fraction(1024**4)),
        ("1Pi", Fraction(1024**5)),
        ("1Ei", Fraction(1024**6)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1.5e-3", Fraction(15, 10**4)),
        ("12e+2", Fraction(1200)),
        ("1e-3", Fraction(1, 1000)),
        ("1e003", Fraction(1000)),
        ("1.5Mi", Fraction(3 * 1024**2, 2)),
        ("-0.5Ki", Fraction(-512)),
        # apimachinery reads a lone sign or point as zero
        (".", Fraction(0)),
        ("-", Fraction(0)),
        ("+.", Fraction(0)),
        # decoding a manifest trims whitespace (Quantity.UnmarshalJSON)
        ("1 ", Fraction(1)),
        (" 100m", Fraction(1, 10)),
        # rounded up to a whole nano, away from zero
        ("1e-12", Fraction(1, 10**9)),
        ("0.1n", Fraction(1, 10**9)),
        ("-1.5n", Fraction(-2, 10**9)),
        # capped at 2^63-1
        ("8Ei", Fraction(2**63 - 1)),
        ("100E", Fraction(2**63 - 1)),
        ("1e1000", Fraction(2**63 - 1)),
        ("-1e30", Fraction(-(2**63 - 1))),
        (10**30, Fraction(2**63 - 1)),
        (1, Fraction(1)),
        (0.5, Fraction(1, 2)),
        (0.1, Fraction(1, 10)),
    ],
)
def test_parse_quantity(text: str | int | float, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "abc",
        "1K",
        "1ki",
        "1e",
        "1i",
        "1Kib",
        "1.2.3",
        "1e3.5",
        "--1",
        "1mm",
        # apimachinery's own table of invalid quantities
        "1.1.M",
        "1+1.0M",
        "0.1mi",
        "0.1am",
        "aoeu",
        ".5i",
        "-3.01i",
        "-3.01e-",
        "1e+",
        "1Ki1",
        "1E3Ki",
        "1e3e3",
        "0x10",
        "1_000",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, but not an ASCII one
    ],
)
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e999999999", r"quantity '1e999999999': exponent out of range"),
        ("1e-999999999", r"quantity '1e-999999999': exponent out of range"),
        ("1e1001", r"quantity '1e1001': exponent out of range"),
        ("1" * 101, r"quantity '1{40}\.\.\.': longer than 100 characters"),
        ("1e" + "9" * 10**6, r"longer than 100 characters"),
    ],
)
def test_parse_quantity_refuses_what_would_cost_too_much(text: str, message: str) -> None:
    """Inputs that once froze the event loop are refused at once, naming the quantity."""
    started = time.monotonic()
    with pytest.raises(ValueError, match=message):
        parse_quantity(text)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("value", [True, None, [1], float("nan"), float("inf")])
def test_parse_quantity_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)


@pytest.mark.parametrize(
    ("text", "milli"),
    [("1", 1000), ("100m", 100), ("0.1", 100), ("1.5", 1500), ("1n", 1), ("250u", 1), ("0", 0)],
)
def test_milli_cpu_rounds_up(text: str, milli: int) -> None:
    assert milli_cpu(text) == milli


@pytest.mark.parametrize(
    ("text", "value"),
    [("1Gi", 1073741824), ("128Mi", 134217728), ("1G", 10**9), ("1.5", 2), ("100m", 1)],
)
def test_bytes_rounds_up(text: str, value: int) -> None:
    assert bytes_(text) == value


@pytest.mark.parametrize(
    ("value", "divisor", "result"),
    [
        ("250m", "1m", 250),
        ("250m", "1", 1),
        ("1Gi", "1Mi", 1024),
        ("1G", "1Mi", 954),
        ("0", "1", 0),
    ],
)
def test_ceil_div(value: str, divisor: str, result: int) -> None:
    assert ceil_div(value, divisor) == result


def test_requests_default_to_limits() -> None:
    requests, limits = requests_and_limits(
        {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"memory": "32Mi"}}
    )
    assert requests == {"memory": Fraction(32 * 1024**2), "cpu": Fraction(1, 2)}
    assert limits == {"cpu": Fraction(1, 2), "memory": Fraction(64 * 1024**2)}


def test_resource_list_names_the_bad_key() -> None:
    with pytest.raises(ValueError, match=r"resources\.cpu: quantity 'lots'"):
        resource_list({"cpu": "lots"})
