"""Kubernetes resource quantities (``100m``, ``1Gi``, ``0.5``, ``1e3``): the one parser.

A quantity is ``<signed number><suffix>`` (apimachinery's ``ParseQuantity``) where the
suffix is one of

* binary SI: ``Ki Mi Gi Ti Pi Ei`` (powers of 1024),
* decimal SI: ``n u m "" k M G T P E`` (powers of 1000; ``u`` is micro),
* a decimal exponent: ``e<int>`` or ``E<int>`` (``1e3`` is 1000; a lone ``E`` is exa).

The number may have a sign, a fraction and leading zeros (``+1``, ``.5``, ``007``,
``1.G`` are all accepted, and so are a lone sign or point, which apimachinery reads as
zero). Surrounding whitespace is dropped, as ``Quantity.UnmarshalJSON`` drops it when a
manifest is decoded. :func:`parse_quantity` returns the value as an exact
:class:`~fractions.Fraction`, so ``milli_cpu("0.1")`` is 100 and not 99.99999. As in
apimachinery, a value is rounded up (away from zero) to a whole nano (``1e-12`` is
``1n``) and its magnitude is capped at 2^63-1; the rounding helpers round up, as
``Quantity.MilliValue()`` and ``Quantity.Value()`` do.

Parsing costs constant time and memory whatever the input: a text longer than
:data:`MAX_QUANTITY_LENGTH` characters, or an exponent beyond :data:`MAX_EXPONENT` in
magnitude (``1e999999999``), is refused instead of building a huge number.

YAML often decodes ``cpu: 1`` or ``cpu: 0.5`` to numbers; those are accepted too.
Anything else raises :class:`ValueError` naming the offending text.

The container helpers apply the API server's defaulting the kubelet relies on: a
resource with a limit but no request gets the limit as its request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Final

Quantity = Fraction
"""The value of a parsed quantity (exact)."""

QuantityText = str | int | float | Fraction
"""What a manifest may hold where a quantity belongs."""

#: Suffix -> (base, power): the value is multiplied by base**power.
_SUFFIXES: Final[dict[str, tuple[int, int]]] = {
    "Ki": (2, 10),
    "Mi": (2, 20),
    "Gi": (2, 30),
    "Ti": (2, 40),
    "Pi": (2, 50),
    "Ei": (2, 60),
    "n": (10, -9),
    "u": (10, -6),
    "m": (10, -3),
    "": (10, 0),
    "k": (10, 3),
    "M": (10, 6),
    "G": (10, 9),
    "T": (10, 12),
    "P": (10, 15),
    "E": (10, 18),
}
# parseQuantityString's scanner: sign, digits, optional fraction, suffix letters, then an
# optional signed exponent. Which suffixes are real is checked afterwards.
_SYNTAX: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*)([+-]?[0-9]*)")

#: Longer texts are refused (no real quantity comes near; the bound keeps parsing cheap).
MAX_QUANTITY_LENGTH: Final = 100
#: Decimal exponents beyond this in magnitude are refused rather than building huge numbers.
MAX_EXPONENT: Final = 1000
#: apimachinery's cap on a quantity's magnitude (``math.MaxInt64``).
MAX_QUANTITY: Final = Fraction(2**63 - 1)
_NANO: Final = 10**9

CPU: Final = "cpu"
MEMORY: Final = "memory"
EPHEMERAL_STORAGE: Final = "ephemeral-storage"


class QuantityError(ValueError):
    """A text that is not a quantity; ``reason`` says why without repeating the text."""

    def __init__(self, text: object, reason: str) -> None:
        self.text = text
        self.reason = reason
        shown = _shown(text) if isinstance(text, str) else repr(text)
        super().__init__(f"quantity {shown}: {reason}")


def _bounded(value: Fraction) -> Fraction:
    """Round up to a whole nano, away from zero, and cap the magnitude at 2^63-1."""
    magnitude = abs(value)
    if magnitude > MAX_QUANTITY:
        magnitude = MAX_QUANTITY
    elif magnitude.denominator != 1:
        magnitude = Fraction(math.ceil(magnitude * _NANO), _NANO)
    return -magnitude if value < 0 else magnitude


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_quantity(text: object) -> Quantity:
    """The exact value of a Kubernetes quantity; ValueError (naming it) if it is not one."""
    if isinstance(text, bool):
        raise QuantityError(text, "expected a string or number, got bool")
    if isinstance(text, Fraction):
        return _bounded(text)
    if isinstance(text, int):
        return _bounded(Fraction(text))
    if isinstance(text, float):
        if not math.isfinite(text):
            raise QuantityError(text, "not a finite number")
        # repr gives the shortest text that reads back as this float, e.g. 0.1 -> "0.1".
        return parse_quantity(repr(text))
    if not isinstance(text, str):
        raise QuantityError(text, f"expected a string or number, got {type(text).__name__}")
    if len(text) > MAX_QUANTITY_LENGTH:
        raise QuantityError(text, f"longer than {MAX_QUANTITY_LENGTH} characters")
    stripped = text.strip()
    if not stripped:
        raise QuantityError(text, "empty")
    match = _SYNTAX.fullmatch(stripped)
    if match is None:
        raise QuantityError(
            text,
            "quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        )
    sign, whole, frac, letters, exponent = match.groups()
    suffix = letters + exponent
    if suffix in _SUFFIXES:
        base, power = _SUFFIXES[suffix]
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        base, power = 10, int(suffix[1:])  # at most 100 digits: cheap
        if abs(power) > MAX_EXPONENT:
            raise QuantityError(
                text, f"exponent out of range (at most {MAX_EXPONENT} in magnitude)"
            )
    else:
        raise QuantityError(
            text,
            f"unknown suffix {suffix!r} "
            "(expected Ki/Mi/Gi/Ti/Pi/Ei, n/u/m/k/M/G/T/P/E or e<exponent>)",
        )
    frac = frac or ""
    value = Fraction(int((whole or "0") + frac), 10 ** len(frac))
    value *= Fraction(base) ** power
    return _bounded(-value if sign == "-" else value)


def _as_quantity(q: QuantityText) -> Quantity:
    return q if isinstance(q, Fraction) else parse_quantity(q)


def milli_cpu(q: QuantityText) -> int:
    """``Quantity.MilliValue()``: the value in thousandths, rounded up (``"0.1"`` -> 100)."""
    return math.ceil(_as_quantity(q) * 1000)


def bytes_(q: QuantityText) -> int:
    """``Quantity.Value()``: the value as a whole number, rounded up (``"1Gi"`` -> 1073741824)."""
    return math.ceil(_as_quantity(q))


def ceil_div(q: QuantityText, divisor: QuantityText) -> int:
    """ceil(q / divisor), as the downward API reports a resource; 0 for a zero or negative q.

    A zero or negative divisor also gives 0, as in the kubelet.
    """
    value = _as_quantity(q)
    div = _as_quantity(divisor)
    if value <= 0 or div <= 0:
        return 0
    return math.ceil(value / div)


ResourceList = dict[str, Quantity]


def resource_list(raw: object, path: str = "resources") -> ResourceList:
    """A ``requests`` or ``limits`` mapping parsed to quantities; ValueError names the key."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping of quantities")
    out: ResourceList = {}
    for name, value in raw.items():
        try:
            out[str(name)] = parse_quantity(value)
        except ValueError as err:
            raise ValueError(f"{path}.{name}: {err}") from None
    return out


def requests_and_limits(resources: Mapping[str, object]) -> tuple[ResourceList, ResourceList]:
    """A container's ``resources`` as (requests, limits), requests defaulted from limits.

    This is the API server's ``SetDefaults_ResourceRequirements``: a resource that has
    a limit and no request gets the limit as its request.
    """
    limits = resource_list(resources.get("limits"), "resources.limits")
    requests = resource_list(resources.get("requests"), "resources.requests")
    for name, value in limits.items():
        requests.setdefault(name, value)
    return requests, limits
