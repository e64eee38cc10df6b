"""``[site] timezone`` and a campaign's ``recording_retention_days``: defaults, validation, and
``omlmedia check-config`` naming the bad key."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from omlmedia.cli import main
from omlmedia.config import ConfigError, load_config, load_demo_config

QUEUE = "[queues.support]\nmembers = []\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "omlmedia.toml"
    path.write_text(text)
    return path


def test_the_site_is_utc_unless_configured(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")).site.timezone == "UTC"
    assert load_demo_config().site.timezone == "UTC"


def test_an_iana_zone_is_kept_and_gives_that_zones_offsets(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[site]\ntimezone = "America/Argentina/Buenos_Aires"\n'))
    assert config.site.timezone == "America/Argentina/Buenos_Aires"
    offset = datetime(2026, 12, 6, 12, tzinfo=config.site.zone).utcoffset()
    assert offset is not None and offset.total_seconds() == -3 * 3600


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"Mars/Olympus_Mons"', "site.timezone: unknown IANA time zone 'Mars/Olympus_Mons'"),
        ('"Europe/Madird"', 'did you mean "Europe/Madrid"?'),
        ('"../../etc/passwd"', "site.timezone: unknown IANA time zone"),
        ('"/usr/share/zoneinfo/UTC"', "site.timezone: unknown IANA time zone"),
        ('""', "site.timezone: unknown IANA time zone ''"),
        ("3", "site.timezone: expected a string, got an integer"),
    ],
)
def test_a_bad_time_zone_is_refused_with_its_key(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, f"[site]\ntimezone = {value}\n"))
    assert any(message in error for error in caught.value.errors), caught.value.errors


def test_an_unknown_site_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, '[site]\ntimezon = "UTC"\n'))
    assert caught.value.errors == ['site.timezon: unknown key (did you mean "timezone"?)']


def test_check_config_exits_2_naming_the_bad_time_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, '[site]\ntimezone = "Nowhere/Land"\n')
    assert main(["check-config", str(path)]) == 2
    assert "site.timezone: unknown IANA time zone 'Nowhere/Land'" in capsys.readouterr().err


def test_recording_retention_is_per_campaign_and_zero_keeps_forever(tmp_path: Path) -> None:
    text = (
        QUEUE + "[[campaigns]]\nname = 'a'\nqueue = 'support'\nrecording_retention_days = 30\n"
        "[[campaigns]]\nname = 'b'\nqueue = 'support'\n"
    )
    config = load_config(_write(tmp_path, text))
    assert [c.recording_retention_days for c in config.campaigns] == [30, 0]


@pytest.mark.parametrize("value", ["-1", "36501", '"30"'])
def test_a_bad_retention_is_refused_with_its_key(tmp_path: Path, value: str) -> None:
    text = (
        QUEUE
        + f"[[campaigns]]\nname = 'a'\nqueue = 'support'\nrecording_retention_days = {value}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    assert any("campaigns[0].recording_retention_days" in e for e in caught.value.errors)
