from datetime import datetime, timezone

import pytest

from tasks.audio.timestamps import parse_start_time

UTC = timezone.utc


@pytest.mark.parametrize(
    "name, expected, convention",
    [
        ("5783.210315120000.wav", datetime(2021, 3, 15, 12, 0, 0, tzinfo=UTC), "soundtrap"),
        ("20230701_123005.WAV", datetime(2023, 7, 1, 12, 30, 5, tzinfo=UTC), "audiomoth"),
        ("orcasoundlab_1594154121.mp3", datetime(2020, 7, 7, 20, 35, 21, tzinfo=UTC), "unix"),
        ("NAXYS_02345_P008_20120206T084546.144Z_x.wav", datetime(2012, 2, 6, 8, 45, 46, 144000, tzinfo=UTC), "iso8601"),
        ("deploy_2025-07-01T12-30-05Z.flac", datetime(2025, 7, 1, 12, 30, 5, tzinfo=UTC), "iso8601"),
        ("2025-07-01 12:30:05+02:00.wav", datetime(2025, 7, 1, 10, 30, 5, tzinfo=UTC), "iso8601"),
    ],
)
def test_conventions(name, expected, convention):
    assert parse_start_time(name) == (expected, convention)


@pytest.mark.parametrize("name", ["Biggs song 01.wav", "UPSWEEP(1).wav", "20231399_250000.wav", "id_0000000123.wav"])
def test_names_without_a_valid_time(name):
    assert parse_start_time(name) == (None, None)
