"""Quantities: exact parsing, Kubernetes rounding, canonical formatting round trips."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.quantity import cpu_millis, format_quantity, parse_quantity, scaled_int_or_percent, to_bytes


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("100m", Fraction(1, 10), id="milli"),
        pytest.param("0.5", Fraction(1, 2), id="decimal-fraction"),
        pytest.param(".5", Fraction(1, 2), id="leading-dot"),
        pytest.param("1", Fraction(1), id="one"),
        pytest.param("64Mi", Fraction(64 * 1024**2), id="mebi"),
        pytest.param("1G", Fraction(10**9), id="giga"),
        pytest.param("1e3", Fraction(1000), id="exponent"),
        pytest.param("1E-3", Fraction(1, 1000), id="negative-exponent"),
        pytest.param("1.5Gi", Fraction(3 * 1024**3, 2), id="fractional-gibi"),
        pytest.param("500k", Fraction(500_000), id="kilo"),
        pytest.param("250u", Fraction(250, 10**6), id="micro"),
        pytest.param("-2", Fraction(-2), id="negative"),
    ],
)
def test_parse_known_quantities(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1Z", "1.2.3", "--1", "1 Mi", "Mi", "1Kb", " 1", "1e"])
def test_invalid_quantities_name_the_string(bad: str) -> None:
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity(bad)


def test_cpu_and_bytes_round_up_like_kubernetes() -> None:
    assert cpu_millis("100m") == 100
    assert cpu_millis("0.5") == 500
    assert cpu_millis("2") == 2000
    assert cpu_millis("1u") == 1  # MilliValue rounds up
    assert to_bytes("64Mi") == 67_108_864
    assert to_bytes("1G") == 1_000_000_000
    assert to_bytes("1.5") == 2


@pytest.mark.parametrize(
    ("value", "binary", "text"),
    [
        ("0.5", False, "500m"),
        ("1000", False, "1k"),
        ("1500", False, "1500"),
        ("1.5Gi", True, "1536Mi"),
        ("64Mi", True, "64Mi"),
        ("1000", True, "1k"),  # below 1024 Kubernetes prints the decimal form
        ("1500", True, "1500"),
        ("0", False, "0"),
    ],
)
def test_canonical_format(value: str, binary: bool, text: str) -> None:
    assert format_quantity(value, binary=binary) == text


nanos = st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: Fraction(n, 10**9))


@given(nanos, st.booleans())
def test_format_then_parse_is_identity(value: Fraction, binary: bool) -> None:
    assert parse_quantity(format_quantity(value, binary=binary)) == value


quantity_strings = st.builds(
    lambda sign, whole, frac, suffix: f"{sign}{whole}{frac}{suffix}",
    st.sampled_from(["", "+", "-"]),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.one_of(st.just(""), st.integers(min_value=0, max_value=999).map(lambda n: f".{n}")),
    st.sampled_from(["", "m", "u", "n", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "e3", "e-2", "E+1"]),
)


@given(quantity_strings)
def test_parsed_strings_format_to_an_equal_or_next_nano(text: str) -> None:
    value = parse_quantity(text)
    again = parse_quantity(format_quantity(text))
    # sub-nano precision rounds away from zero, to the next nano
    assert abs(value) <= abs(again) < abs(value) + Fraction(1, 10**9)
    assert (again < 0) == (value < 0) or again == 0
    assert cpu_millis(text) * Fraction(1, 1000) >= value


def test_percentages_scale_like_rolling_updates() -> None:
    assert scaled_int_or_percent("25%", 10, round_up=True) == 3
    assert scaled_int_or_percent("25%", 10, round_up=False) == 2
    assert scaled_int_or_percent(2, 10, round_up=True) == 2
    with pytest.raises(ValueError, match="percentage"):
        scaled_int_or_percent("x%", 10, round_up=True)
