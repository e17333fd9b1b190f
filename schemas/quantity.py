"""Kubernetes resource quantities ("100m", "64Mi", "1.5Gi", "1e3", ...) as exact fractions.

Structs keep quantities as the strings users wrote; the scheduler, kubelet and HPA compare
them through this module. Values are ``fractions.Fraction`` so nothing is lost to floating
point; ``cpu_millis`` and ``to_bytes`` round up as Kubernetes' MilliValue/Value do.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {e: s for s, e in _DECIMAL.items()}

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>\d+(?:\.\d*)?|\.\d+)"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exp>[+-]?\d+))?"
)
_MAX_EXPONENT = 64  # "1e999999" would otherwise build an enormous integer


def parse_quantity(q: object) -> Fraction:
    """The exact value of a quantity; ValueError names the string when it is not one."""
    if isinstance(q, Fraction):
        return q
    if isinstance(q, bool):
        raise ValueError(f"quantity must be a string or a number, not {q!r}")
    if isinstance(q, int):
        return Fraction(q)
    if not isinstance(q, str):
        raise ValueError(f"quantity must be a string or a number, not {q!r}")
    m = _QUANTITY.fullmatch(q)
    if m is None:
        raise ValueError(
            f'quantities must match the regular expression \'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$\': "{q}"'
        )
    value = Fraction(m["number"])
    if m["exp"] is not None:
        exp = int(m["exp"])
        if abs(exp) > _MAX_EXPONENT:
            raise ValueError(f'quantity "{q}" has an exponent out of range')
        value *= Fraction(10) ** exp
    elif m["suffix"] in _BINARY:
        value *= 1024 ** _BINARY[m["suffix"]]
    elif m["suffix"]:
        value *= Fraction(10) ** _DECIMAL[m["suffix"]]
    return -value if m["sign"] == "-" else value


def is_quantity(q: object) -> bool:
    try:
        parse_quantity(q)
    except ValueError:
        return False
    return True


def _ceil(x: Fraction) -> int:
    return math.ceil(x)


def cpu_millis(q: str | int | Fraction) -> int:
    """Millicores, rounded up: "100m" -> 100, "0.5" -> 500, "1" -> 1000, "1u" -> 1."""
    return _ceil(parse_quantity(q) * 1000)


def to_bytes(q: str | int | Fraction) -> int:
    """The integral value, rounded up: "64Mi" -> 67108864, "1G" -> 1000000000, "0.5" -> 1."""
    return _ceil(parse_quantity(q))


def format_quantity(value: str | int | Fraction, binary: bool = False) -> str:
    """The canonical string of a value, as Kubernetes prints it.

    Decimal form picks the largest SI suffix that keeps the mantissa integral, after rounding
    up to nano precision ("0.5" -> "500m", "1000" -> "1k"). With ``binary=True`` integral
    multiples of 1024 use Ki..Ei ("64Mi"); other values fall back to the decimal form.
    """
    v = parse_quantity(value)
    if v == 0:
        return "0"
    sign = "-" if v < 0 else ""
    a = -v if v < 0 else v
    if binary and a.denominator == 1 and a >= 1024:
        n = int(a)
        power = 0
        while power < 6 and n % 1024 == 0:
            n //= 1024
            power += 1
        if power:
            suffix = next(s for s, p in _BINARY.items() if p == power)
            return f"{sign}{n}{suffix}"
        return f"{sign}{n}"
    nanos = _ceil(a * 10**9)
    exp = -9
    while exp < 18 and nanos % 1000 == 0:
        nanos //= 1000
        exp += 3
    return f"{sign}{nanos}{_DECIMAL_BY_EXP[exp]}"


def scaled_int_or_percent(value: int | str, total: int, round_up: bool) -> int:
    """An int-or-string such as maxSurge: an int as is, "25%" of ``total`` rounded up or down."""
    if isinstance(value, int):
        return value
    if not value.endswith("%"):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f'invalid value "{value}": must be an integer or percentage (e.g. "5%")') from None
    try:
        pct = int(value[:-1])
    except ValueError:
        raise ValueError(f'invalid value "{value}": must be an integer or percentage (e.g. "5%")') from None
    scaled = Fraction(pct * total, 100)
    return math.ceil(scaled) if round_up else math.floor(scaled)
