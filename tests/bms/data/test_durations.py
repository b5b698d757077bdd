import pytest

from bms.data.durations import parse_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600.0), ("90m", 5400.0), ("24h", 86400.0), ("1h30m", 5400.0), ("1.5h", 5400.0),
     ("2d", 172800.0), ("0.25", 0.25), ("10s", 10.0), (" 5M ", 300.0)],
)
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "h", "1h30", "-5", "1..5"])
def test_bad_durations_name_the_text(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_s(text)
