import pytest
from hypothesis import given, strategies as st

from skewd.errors import UsageError
from skewd.units import format_duration, parse_duration, parse_rate


@pytest.mark.parametrize("text,ns", [
    ("5ms", 5_000_000), ("-20us", -20_000), ("20µs", 20_000), ("1.5s", 1_500_000_000),
    ("250ns", 250), ("0", 0), ("-0", 0), ("5", None), ("2min", 120_000_000_000), (" 3 ms ", 3_000_000),
    (".5ms", 500_000), ("1e3ns", 1000),
])
def test_parse_duration(text, ns):
    if ns is None:
        with pytest.raises(UsageError, match="no unit"):
            parse_duration(text)
        assert parse_duration(text, default_unit="ms") == 5_000_000
    else:
        assert parse_duration(text) == ns


@pytest.mark.parametrize("bad", ["5 parsecs", "ms", "", "5ms5", "--5ms", "5mss"])
def test_parse_duration_rejects_naming_value(bad):
    with pytest.raises(UsageError) as e:
        parse_duration(bad)
    assert repr(bad) in str(e.value)


def test_parse_rate():
    assert parse_rate("20ppm") == 20_000
    assert parse_rate("150ppb") == 150
    assert parse_rate("-1.5ppm") == -1500
    with pytest.raises(UsageError, match="ppm"):
        parse_rate("20")
    with pytest.raises(UsageError):
        parse_rate("20ms")


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_duration_roundtrip_ns(n):
    assert parse_duration(f"{n}ns") == n
    assert parse_duration(f"{n}us") == n * 1000


def test_format_duration():
    assert format_duration(5_000_000) == "5.000ms"
    assert format_duration(-20_000) == "-20.00us"
    assert format_duration(35) == "35ns"
