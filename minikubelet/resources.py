"""Kubernetes resource quantities (``100m``, ``1Gi``, ``0.5``, ``1e3``) read exactly.

A quantity is ``<signed number><suffix>`` where the suffix is one of

* binary SI: ``Ki Mi Gi Ti Pi Ei`` (powers of 1024),
* decimal SI: ``n u m "" k M G T P E`` (powers of 1000; ``u`` is micro),
* a decimal exponent: ``e<int>`` or ``E<int>`` (``1e3`` is 1000; a lone ``E`` is exa).

The number may have a sign, a fraction and leading zeros (``+1``, ``.5``, ``007``,
``1.G`` are all accepted, as apimachinery's ``ParseQuantity`` accepts them).
:func:`parse_quantity` returns the value as an exact :class:`~fractions.Fraction`, so
``milli_cpu("0.1")`` is 100 and not 99.99999. The rounding helpers round up, as
``Quantity.MilliValue()`` and ``Quantity.Value()`` do.

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

_BINARY: Final = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}
_DECIMAL: Final = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
# sign, integer part, optional fraction, then the suffix (checked separately).
_NUMBER: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_EXPONENT: Final = re.compile(r"[eE]([+-]?[0-9]+)")
#: Exponents beyond this are refused rather than building huge integers.
_MAX_EXPONENT: Final = 1000

CPU: Final = "cpu"
MEMORY: Final = "memory"
EPHEMERAL_STORAGE: Final = "ephemeral-storage"


def parse_quantity(text: object) -> Quantity:
    """The exact value of a Kubernetes quantity; ValueError if it is not one."""
    if isinstance(text, bool):
        raise ValueError(f"quantity: expected a string or number, got bool {text!r}")
    if isinstance(text, Fraction):
        return text
    if isinstance(text, int):
        return Fraction(text)
    if isinstance(text, float):
        if not math.isfinite(text):
            raise ValueError(f"quantity {text!r}: not a finite number")
        # repr gives the shortest text that reads back as this float, e.g. 0.1 -> "0.1".
        return parse_quantity(repr(text))
    if not isinstance(text, str):
        raise ValueError(f"quantity: expected a string or number, got {type(text).__name__}")
    match = _NUMBER.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"quantity {text!r}: empty")
    sign, whole, frac, suffix = match.groups()
    if not whole and not frac:
        raise ValueError(f"quantity {text!r}: expected a number before the suffix")
    value = Fraction(int(whole or "0"))
    if frac:
        value += Fraction(int(frac), 10 ** len(frac))
    if suffix in _BINARY:
        value *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= _DECIMAL[suffix]
    else:
        exp = _EXPONENT.fullmatch(suffix)
        if exp is None:
            raise ValueError(
                f"quantity {text!r}: unknown suffix {suffix!r} "
                "(expected Ki/Mi/Gi/Ti/Pi/Ei, n/u/m/k/M/G/T/P/E or e<exponent>)"
            )
        power = int(exp.group(1))
        if abs(power) > _MAX_EXPONENT:
            raise ValueError(f"quantity {text!r}: exponent out of range")
        value *= Fraction(10) ** power
    return -value if sign == "-" else value


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
